package channelstest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// faultChildEnv, when set, makes the test binary a consumer child of the
// fault suite instead of running the tests: its value is a childConfig.
const faultChildEnv = "CHANNELS_E2E_FAULT_CHILD"

// The memory budget of a hostile-input child (MemoryLimit): the address
// space it may map on top of what it has at start, and its soft heap limit.
// A decoder that tries to allocate gigabytes kills the child, not the machine.
const (
	childAddressBudget = 4 << 30
	childHeapLimit     = 512 << 20
)

// childConfig is what a consumer child consumes and how.
type childConfig struct {
	Target      string        `json:"target"`
	Channel     string        `json:"channel"`
	Group       string        `json:"group"`
	MaxRetries  int           `json:"maxRetries"` // the channel's MaxRetries: 0 the default, channels.NoRetries none
	MaxInFlight int           `json:"maxInFlight"`
	Work        time.Duration `json:"work"`        // simulated processing time per message
	Serializer  string        `json:"serializer"`  // "JSON" (default) or "MsgPack"
	DeadLetter  string        `json:"deadLetter"`  // dead-letter queue; "" disables dead-lettering
	MemoryLimit bool          `json:"memoryLimit"` // run under limitMemory
}

// faultPayload is the body of the suite's valid messages.
type faultPayload struct {
	Seq int `json:"seq"`
}

// runFaultChild consumes one channel with the target's adapter and prints
// "READY" once consuming, then one line "P <seq> <id> <attempt>" per
// processed message (seq -1 when the payload decodes but carries none). It
// decodes every payload into `any` (the untyped path of the serializer) and
// returns the decode error, so an undecodable payload is poison. It runs
// until killed; SIGTERM stops it gracefully.
func runFaultChild(spec string) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "fault child: "+format+"\n", args...)
		return 3
	}
	var cfg childConfig
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		return fail("bad config: %v", err)
	}
	if cfg.MemoryLimit {
		if err := limitMemory(); err != nil {
			return fail("memory limit: %v", err)
		}
	}
	tg, ok := targetByName(cfg.Target)
	if !ok {
		return fail("unknown target %q", cfg.Target)
	}
	a, err := tg.NewAdapter()
	if err != nil {
		return fail("adapter: %v", err)
	}
	ser, err := broker.SerializerByName(cfg.Serializer)
	if err != nil {
		return fail("%v", err)
	}
	opts := []channels.Option{channels.WithAdapter(a), fast, channels.WithSerializer(ser)}
	if cfg.DeadLetter != "" {
		opts = append(opts, channels.WithDeadLettering(channels.DeadLettering{Enabled: true, QueueName: cfg.DeadLetter}))
	}
	p, err := channels.New(opts...)
	if err != nil {
		return fail("new: %v", err)
	}
	handler := func(ctx context.Context, m *channels.Message) error {
		var v any
		if err := m.Decode(&v); err != nil {
			return err
		}
		seq, ok := seqOf(v)
		if !ok {
			seq = -1
		}
		if err := SimulateWork(ctx, cfg.Work); err != nil {
			return err // cut by the stop deadline: released, printed when run again
		}
		// One write per line: atomic on the pipe, nothing buffered when killed.
		_, _ = os.Stdout.WriteString(fmt.Sprintf("P %d %s %d\n", seq, m.ID, m.Attempt))
		return nil
	}
	s := &Service{Name: "fault", Channels: channels.Channels{cfg.Channel: {Group: cfg.Group, MaxInFlight: cfg.MaxInFlight,
		MaxRetries: cfg.MaxRetries, Handler: handler, AdapterOptions: tg.ChannelOptions}}}
	if err := p.Register(s); err != nil {
		return fail("register: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	err = p.Start(ctx)
	cancel()
	if err != nil {
		return fail("start: %v", err)
	}
	_, _ = os.Stdout.WriteString("READY\n")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		return fail("stop: %v", err)
	}
	return 0
}

// seqOf reads the "seq" of a payload decoded into any (JSON gives
// map[string]any and float64, MsgPack map[any]any and sized integers).
func seqOf(v any) (int, bool) {
	var raw any
	switch m := v.(type) {
	case map[string]any:
		raw = m["seq"]
	case map[any]any:
		raw = m["seq"]
	default:
		return 0, false
	}
	switch n := raw.(type) {
	case float64:
		return int(n), n == float64(int(n))
	case int8:
		return int(n), true
	case int16:
		return int(n), true
	case int32:
		return int(n), true
	case int64:
		return int(n), true
	case uint8:
		return int(n), true
	case uint16:
		return int(n), true
	case uint32:
		return int(n), true
	case uint64:
		return int(n), true
	case int:
		return n, true
	}
	return 0, false
}

func targetByName(name string) (Target, bool) {
	targetsMu.Lock()
	defer targetsMu.Unlock()
	for _, t := range targets {
		if t.Name == name {
			return t, true
		}
	}
	return Target{}, false
}

// processed is one "P" line of a child (or one in-process handler run).
type processed struct {
	seq     int
	id      string
	attempt int
	by      string
}

// faultChild is a consumer child process seen from the test.
type faultChild struct {
	name  string
	cmd   *exec.Cmd
	ready chan struct{}
	done  chan struct{}

	mu      sync.Mutex
	lines   []processed
	waitErr error
	stderr  bytes.Buffer
}

// startFaultChild re-executes the test binary as a consumer child of cfg on
// tg, and kills it (SIGKILL) in the spec's cleanup whatever happens.
func startFaultChild(tg Target, name string, cfg childConfig) *faultChild {
	GinkgoHelper()
	cfg.Target = tg.Name
	spec, err := json.Marshal(cfg)
	Expect(err).NotTo(HaveOccurred())
	c := &faultChild{name: name, ready: make(chan struct{}), done: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), faultChildEnv+"="+string(spec))
	c.cmd.Stderr = lockedWriter{&c.mu, &c.stderr}
	dieWithParent(c.cmd)
	out, err := c.cmd.StdoutPipe()
	Expect(err).NotTo(HaveOccurred())
	Expect(c.cmd.Start()).To(Succeed())
	DeferCleanup(func() {
		c.kill()
		<-c.done
	})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if line == "READY" {
				close(c.ready)
				continue
			}
			if f := strings.Fields(line); len(f) == 4 && f[0] == "P" {
				seq, _ := strconv.Atoi(f[1])
				att, _ := strconv.Atoi(f[3])
				c.mu.Lock()
				c.lines = append(c.lines, processed{seq: seq, id: f[2], attempt: att, by: c.name})
				c.mu.Unlock()
			}
		}
		err := c.cmd.Wait()
		c.mu.Lock()
		c.waitErr = err
		c.mu.Unlock()
		close(c.done)
	}()
	return c
}

// waitReady waits until the child consumes, or fails if it died first.
func (c *faultChild) waitReady() {
	GinkgoHelper()
	select {
	case <-c.ready:
	case <-c.done:
		Fail(fmt.Sprintf("consumer child %s died before it was ready: %s", c.name, c.death()))
	case <-time.After(30 * time.Second):
		Fail(fmt.Sprintf("consumer child %s not ready after 30s; stderr: %s", c.name, c.stderrTail()))
	}
}

func (c *faultChild) kill() {
	if c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// killNow sends SIGKILL and waits until the process is gone.
func (c *faultChild) killNow() {
	c.kill()
	<-c.done
}

func (c *faultChild) dead() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *faultChild) all() []processed {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]processed(nil), c.lines...)
}

func (c *faultChild) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// death describes how the child ended: its exit status and the start of
// what it wrote to stderr from the first fatal error or panic on.
func (c *faultChild) death() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	tail := c.stderrTailLocked()
	why := ""
	for _, oom := range []string{"out of memory", "address space", "sysAlloc", "cannot allocate memory", "failed to allocate"} {
		if strings.Contains(tail, oom) {
			why = " (it tried to allocate beyond its memory budget)"
			break
		}
	}
	return fmt.Sprintf("%v%s; stderr: %s", c.waitErr, why, tail)
}

func (c *faultChild) stderrTail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderrTailLocked()
}

func (c *faultChild) stderrTailLocked() string {
	s := c.stderr.String()
	for _, mark := range []string{"fatal error", "panic:", "fault child:"} {
		if i := strings.Index(s, mark); i >= 0 {
			s = s[i:]
			break
		}
	}
	if len(s) > 600 {
		s = s[:600] + "..."
	}
	return strings.TrimSpace(s)
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() < 1<<20 {
		w.b.Write(p)
	}
	return len(p), nil
}
