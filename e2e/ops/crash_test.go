package ops

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"
)

// buildCommand builds cmd/channels into a temporary directory, once per
// test binary.
var buildCommand = sync.OnceValues(func() (string, error) {
	dir, err := tempDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "channels")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/microchannels/channels/cmd/channels").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/channels: %v\n%s", err, out)
	}
	return bin, nil
})

var progressLine = regexp.MustCompile(`^replayed (\d+)/(\d+)$`)

// A replay killed with SIGKILL in the middle loses no dead letter: each is
// still in the queue or was received by the channel's consumer (a few
// twice at worst); a second replay ends the work. The process is killed
// at its first progress line (after a second; some hundreds done).
func TestReplayKilled(t *testing.T) {
	const n = 2000
	for _, tg := range targets {
		if tg.name != "redis" && tg.name != "nats" {
			continue
		}
		t.Run(tg.name, func(t *testing.T) {
			tg.need(t)
			bin, err := buildCommand()
			if err != nil {
				t.Fatal(err)
			}
			f := newFixture(t, tg)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			ids := make([]int, n)
			for i := range ids {
				ids[i] = i + 1
			}
			// Payloads of 4 KiB: a replay of them lasts long enough to be
			// killed after its first progress line (printed after a second).
			pad := strings.Repeat("x", 4<<10)
			for _, id := range ids {
				if err := f.p.SendToChannel(ctx, "orders", map[string]any{"id": id, "pad": pad}); err != nil {
					t.Fatal(err)
				}
			}
			f.waitDead(f.queue, n)
			f.fixed.Store(true)

			cmd := exec.CommandContext(ctx, bin, "--adapter", tg.url(), "--namespace", f.ns, "dlq", "replay", "--rate", "500") // paced: the kill lands mid-replay
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Kill it once its progress shows some hundreds done.
			killedAt := -1
			var lines []string
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				lines = append(lines, sc.Text())
				m := progressLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
				if m == nil {
					continue
				}
				done, _ := strconv.Atoi(m[1])
				if done < n {
					if err := cmd.Process.Kill(); err != nil {
						t.Fatal(err)
					}
					killedAt = done
					break
				}
			}
			werr := cmd.Wait()
			if killedAt < 0 {
				t.Fatalf("the replay ended before it could be killed (%v); stderr:\n%s", werr, strings.Join(lines, "\n"))
			}
			t.Logf("killed after %d of %d replayed: %v", killedAt, n, werr)

			// Nothing lost: each id is in the queue or was received.
			left := map[int]bool{}
			for _, e := range f.list(f.queue) {
				left[idOf(t, e)] = true
			}
			var received map[int]int
			// What the broker accepted before the kill reaches the consumer.
			channelstest.EventuallyTrue(t, 30*time.Second, "every dead letter in the queue or received", func() bool {
				received = counts(t, f)
				for _, id := range ids {
					if !left[id] && received[id] == 0 {
						return false
					}
				}
				return true
			})
			dups := 0
			for id, c := range received {
				if c > 1 || left[id] {
					dups++
				}
			}
			t.Logf("after the kill: %d left in the queue, %d received, %d received twice or also left", len(left), len(received), dups)
			if len(left) == 0 || len(left) == n {
				t.Fatalf("%d left: the kill did not land in the middle of the replay", len(left))
			}

			// A second replay ends the work.
			out, err := exec.CommandContext(ctx, bin, "--adapter", tg.url(), "--namespace", f.ns, "dlq", "replay").CombinedOutput()
			if err != nil {
				t.Fatalf("second replay: %v\n%s", err, out)
			}
			if n := len(f.list(f.queue)); n != 0 {
				t.Fatalf("%d dead letters left after the second replay", n)
			}
			channelstest.EventuallyTrue(t, 30*time.Second, "every dead letter received", func() bool {
				received = counts(t, f)
				for _, id := range ids {
					if received[id] == 0 {
						return false
					}
				}
				return true
			})
			twice := 0
			for _, c := range received {
				if c > 1 {
					twice++
				}
			}
			t.Logf("in the end: %d received, %d of them more than once", len(received), twice)
		})
	}
}

// counts are the runs of the orders handler by user id.
func counts(t testing.TB, f *fixture) map[int]int {
	out := map[int]int{}
	for _, id := range userIDs(t, f.handled.All()) {
		out[id]++
	}
	return out
}
