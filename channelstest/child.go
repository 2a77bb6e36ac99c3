package channelstest

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ChildEnv names the environment variable that makes a test binary run a
// child's role instead of its tests (see ChildMain and StartChild).
const ChildEnv = "CHANNELS_TEST_CHILD"

// ChildMain is the TestMain of a package whose tests start children of
// their own binary (consumers killed mid-run, processes that crash on a
// message): when started by StartChild, it runs run with the child's spec
// and exits with its result; otherwise it runs the tests.
func ChildMain(m *testing.M, run func(spec string) int) {
	if spec := os.Getenv(ChildEnv); spec != "" {
		os.Exit(run(spec))
	}
	os.Exit(m.Run())
}

// Child is a process of the test binary started by StartChild. Its
// standard output is read line by line (WaitLine); it is killed at the
// end of the test.
type Child struct {
	cmd   *exec.Cmd
	lines chan string
	early []string // lines read while waiting for another one
}

// StartChild re-executes the test binary as a child with spec (handed to
// the run function of ChildMain) and the extra environment env.
func StartChild(t testing.TB, spec string, env ...string) *Child {
	t.Helper()
	c := &Child{cmd: exec.Command(os.Args[0], "-test.run=^$"), lines: make(chan string, 64)}
	c.cmd.Stderr = os.Stderr
	c.cmd.Env = append(append(os.Environ(), ChildEnv+"="+spec), env...)
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.cmd.Process.Kill(); _ = c.cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	return c
}

// WaitLine returns the first line that starts with prefix, within a
// minute. Other lines are kept for later waits (a message may run before
// the child printed that it is ready).
func (c *Child) WaitLine(t testing.TB, prefix string) string {
	t.Helper()
	for i, l := range c.early {
		if strings.HasPrefix(l, prefix) {
			c.early = append(c.early[:i], c.early[i+1:]...)
			return l
		}
	}
	deadline := time.After(time.Minute)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("child exited before printing %s (printed %q)", prefix, c.early)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
			c.early = append(c.early, l)
		case <-deadline:
			t.Fatalf("child did not print %s (printed %q)", prefix, c.early)
		}
	}
}

// Kill kills the child (SIGKILL, no chance to clean up) and waits for it.
func (c *Child) Kill(t testing.TB) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
}

// Lines returns the child's output lines not yet taken by WaitLine; it is
// closed when the child's output ends.
func (c *Child) Lines() <-chan string { return c.lines }

// Signal sends sig to the child (SIGTERM: a graceful stop).
func (c *Child) Signal(sig os.Signal) error { return c.cmd.Process.Signal(sig) }

// Wait waits for the child to exit, once its output was read to the end
// (Lines closed), and returns its exit error (an *exec.ExitError with the
// exit code when it failed).
func (c *Child) Wait() error { return c.cmd.Wait() }
