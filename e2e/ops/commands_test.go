package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/dlq"
)

// Exit codes of the command.
const (
	exitUsage       = 2
	exitUnsupported = 3
	exitNotFound    = 4
)

// channels ls lists the namespace's channels with their groups; every
// name it lists is in the namespace (RabbitMQ through its management
// plugin).
func TestChannelsLs(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		f := newFixture(t, tg)
		f.send("orders-retry", 1)
		channelstest.EventuallyTrue(t, 30*time.Second, "orders-retry handled", func() bool { return f.retried.Count() == 1 })
		full := f.ns + ".orders-retry"
		var cs []broker.ChannelInfo
		channelstest.EventuallyTrue(t, 30*time.Second, "ls lists "+full+" with group billing", func() bool {
			cs = decode[[]broker.ChannelInfo](t, f.mustRun("--json", "ls"))
			for _, c := range cs {
				if c.Name == full && slices.ContainsFunc(c.Groups, func(g broker.GroupInfo) bool { return g.Name == "billing" }) {
					return true
				}
			}
			return false
		})
		for _, c := range cs {
			if !strings.HasPrefix(c.Name, f.ns+".") {
				t.Fatalf("ls lists %s, outside namespace %s", c.Name, f.ns)
			}
		}
		// The table shows the same.
		out := f.mustRun("ls")
		if !strings.HasPrefix(out, "CHANNEL") || !strings.Contains(out, full) || !strings.Contains(out, "billing") {
			t.Fatalf("ls table:\n%s", out)
		}
		// Another namespace sees none of them.
		if code, out, errs := runCommand(tg.url(), f.ns+"-other", "--json", "ls"); code != 0 || strings.Contains(out, full) {
			t.Fatalf("ls of another namespace: exit %d\n%s\n%s", code, out, errs)
		}
	})
}

// dlq ls lists the dead letters the plugin wrote, with their origin and
// error, filtered by --channel, --since, --error-contains and --limit,
// as a table or JSON, and takes none.
func TestDLQLs(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		f := newFixture(t, tg)
		f.deadLetters(3, 1)

		all := decode[[]dlq.Entry](t, f.mustRun("--json", "dlq", "ls"))
		if len(all) != 4 {
			t.Fatalf("dlq ls: %d entries, want 4", len(all))
		}
		for _, e := range all {
			u := user{}
			if err := json.Unmarshal(e.Payload, &u); err != nil {
				t.Fatalf("payload %q: %v", e.Payload, err)
			}
			want := f.ns + ".orders"
			if u.ID > 100 {
				want = f.ns + ".refunds"
			}
			if e.ID == "" || e.OriginalChannel != want || e.OriginalGroup != "billing" || e.ErrorName != "Error" ||
				e.ErrorMessage != fmt.Sprintf("bad user %d", u.ID) || e.Attempts != 1 || e.Headers["user-header"] != "kept" {
				t.Fatalf("entry %+v", e)
			}
			if d := time.Since(e.Time); d < -time.Minute || d > time.Minute {
				t.Fatalf("entry time %v", e.Time)
			}
		}
		count := func(args ...string) int {
			t.Helper()
			return len(decode[[]dlq.Entry](t, f.mustRun(append([]string{"--json", "dlq", "ls"}, args...)...)))
		}
		if n := count("--channel", "orders"); n != 3 {
			t.Errorf("--channel orders: %d, want 3", n)
		}
		if n := count("--channel", "refunds"); n != 1 {
			t.Errorf("--channel refunds: %d, want 1", n)
		}
		if n := count("--channel", f.ns+".orders"); n != 3 { // a name with the namespace is a full name
			t.Errorf("--channel with the namespace: %d, want 3", n)
		}
		if n := count("--error-contains", "BAD USER 2"); n != 1 {
			t.Errorf("--error-contains: %d, want 1", n)
		}
		if n := count("--since", "1h"); n != 4 {
			t.Errorf("--since 1h: %d, want 4", n)
		}
		if n := count("--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); n != 0 {
			t.Errorf("--since in an hour: %d, want 0", n)
		}
		if n := count("--limit", "2"); n != 2 {
			t.Errorf("--limit 2: %d", n)
		}
		code, out, errs := f.run("dlq", "ls", "--limit", "3")
		if code != 0 || strings.Count(strings.TrimSpace(out), "\n") != 3 || !strings.Contains(errs, "showing the first 3") {
			t.Errorf("--limit 3: exit %d\n%s\n%s", code, out, errs)
		}
		// The table: a header and a row per dead letter.
		table := f.mustRun("dlq", "ls")
		lines := strings.Split(strings.TrimSpace(table), "\n")
		if len(lines) != 5 || !strings.HasPrefix(lines[0], "ID") {
			t.Fatalf("dlq ls table:\n%s", table)
		}
		for _, e := range all {
			if !strings.Contains(table, e.ID) {
				t.Fatalf("table without %s:\n%s", e.ID, table)
			}
		}
		f.expectCode(exitUsage, "--since", "dlq", "ls", "--since", "yesterday-ish")
		if n := len(f.list(f.queue)); n != 4 {
			t.Fatalf("listing took dead letters: %d left", n)
		}
	})
}

// dlq show shows one dead letter's headers and decoded payload; an
// unknown ID is "not found" (exit 4).
func TestDLQShow(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		f := newFixture(t, tg)
		es := f.deadLetters(2, 0)
		e := byUser(t, es, 2)
		out := f.mustRun("dlq", "show", e.ID)
		for _, want := range []string{"id:", e.ID, "queue:", f.queue, "channel:", f.ns + ".orders", "group:", "billing",
			"error:", "Error: bad user 2", "attempts:", "user-header:", "kept", "payload (JSON", `"id": 2`} {
			if !strings.Contains(out, want) {
				t.Fatalf("dlq show without %q:\n%s", want, out)
			}
		}
		got := decode[dlq.Entry](t, f.mustRun("--json", "dlq", "show", e.ID))
		if got.ID != e.ID || got.ErrorMessage != "bad user 2" || string(got.Payload) != string(e.Payload) {
			t.Fatalf("dlq show --json: %+v", got)
		}
		f.expectCode(exitNotFound, "not found", "dlq", "show", "no-such-id")
		f.expectCode(exitUsage, "one ID", "dlq", "show")
	})
}

// dlq replay sends dead letters back (by ID, by filter, to --to) as first
// attempts without the failure headers and with a trail, and removes
// them; --dry-run sends nothing.
func TestDLQReplay(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		f := newFixture(t, tg)
		es := f.deadLetters(3, 1)
		ids := map[string]bool{}
		for _, e := range es {
			ids[e.ID] = true
		}
		f.fixed.Store(true)

		out := f.mustRun("dlq", "replay", "--dry-run")
		if !strings.Contains(out, "dry run: 4 dead letters of "+f.queue) || !strings.Contains(out, f.ns+".orders") {
			t.Fatalf("dry run:\n%s", out)
		}
		channelstest.ConsistentlyTrue(t, time.Second, "a dry run sends nothing", func() bool { return f.handled.Count() == 0 })
		if n := len(f.list(f.queue)); n != 4 {
			t.Fatalf("a dry run removed dead letters: %d left", n)
		}

		// One by ID.
		one := byUser(t, es, 1)
		out = f.mustRun("dlq", "replay", one.ID)
		if !strings.Contains(out, "replayed 1 of 1") {
			t.Fatalf("replay by ID:\n%s", out)
		}
		channelstest.EventuallyTrue(t, 30*time.Second, "user 1 handled", func() bool { return f.handled.Count() == 1 })
		if got := userIDs(t, f.handled.All()); !slices.Equal(got, []int{1}) {
			t.Fatalf("handled %v, want [1]", got)
		}
		f.waitDead(f.queue, 3)

		// The refund to another channel (a short name: the namespace is added).
		rep := decode[struct {
			Queue   string      `json:"queue"`
			Matched int         `json:"matched"`
			Sent    int         `json:"sent"`
			Removed int         `json:"removed"`
			Entries []dlq.Entry `json:"entries"`
		}](t, f.mustRun("--json", "dlq", "replay", "--channel", "refunds", "--to", "orders-retry"))
		if rep.Queue != f.queue || rep.Matched != 1 || rep.Sent != 1 || rep.Removed != 1 {
			t.Fatalf("replay --to: %+v", rep)
		}
		channelstest.EventuallyTrue(t, 30*time.Second, "the refund reaches orders-retry", func() bool { return f.retried.Count() == 1 })
		if got := userIDs(t, f.retried.All()); !slices.Equal(got, []int{101}) {
			t.Fatalf("orders-retry got %v", got)
		}
		checkReplayed(t, f.retried.All()[0], f.queue, ids)
		f.waitDead(f.queue, 2)

		// An ID that is gone: exit 4, nothing replayed.
		code, out, errs := f.run("dlq", "replay", "--error-contains", "bad user 3", one.ID)
		if code != exitNotFound || !strings.Contains(errs, "not in "+f.queue) {
			t.Fatalf("replay of a gone ID: exit %d\n%s\n%s", code, out, errs)
		}
		out = f.mustRun("dlq", "replay", "--error-contains", "bad user 3")
		if !strings.Contains(out, "replayed 1 of 1") {
			t.Fatalf("replay by filter:\n%s", out)
		}
		// The rest.
		out = f.mustRun("dlq", "replay")
		if !strings.Contains(out, "replayed 1 of 1") {
			t.Fatalf("replay of the rest:\n%s", out)
		}
		channelstest.EventuallyTrue(t, 30*time.Second, "users 1, 2, 3 handled", func() bool { return f.handled.Count() == 3 })
		got := userIDs(t, f.handled.All())
		slices.Sort(got)
		if !slices.Equal(got, []int{1, 2, 3}) {
			t.Fatalf("handled %v", got)
		}
		for _, m := range f.handled.All() {
			checkReplayed(t, m, f.queue, ids)
		}
		if n := len(f.list(f.queue)); n != 0 {
			t.Fatalf("%d dead letters left", n)
		}
		channelstest.ConsistentlyTrue(t, time.Second, "each replayed once", func() bool {
			return f.handled.Count() == 3 && f.retried.Count() == 1
		})
	})
}

// dlq purge refuses without --yes; with it, removes what matches.
func TestDLQPurge(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		f := newFixture(t, tg)
		es := f.deadLetters(3, 1)
		f.expectCode(exitUsage, "--yes", "dlq", "purge")
		f.expectCode(exitUsage, "--yes", "dlq", "purge", "--channel", "orders")
		if n := len(f.list(f.queue)); n != 4 {
			t.Fatalf("purge without --yes removed dead letters: %d left", n)
		}
		if out := f.mustRun("dlq", "purge", "--channel", "refunds", "--yes"); !strings.Contains(out, "removed 1 dead letters of "+f.queue) {
			t.Fatalf("purge --channel:\n%s", out)
		}
		two := byUser(t, es, 2)
		if out := f.mustRun("dlq", "purge", "--yes", two.ID); !strings.Contains(out, "removed 1 ") {
			t.Fatalf("purge ID:\n%s", out)
		}
		left := f.list(f.queue)
		if len(left) != 2 || slices.ContainsFunc(left, func(e dlq.Entry) bool { return e.ID == two.ID || e.OriginalChannel != f.ns+".orders" }) {
			t.Fatalf("left after purges: %+v", left)
		}
		res := decode[struct {
			Queue   string `json:"queue"`
			Removed int    `json:"removed"`
		}](t, f.mustRun("--json", "dlq", "purge", "-y"))
		if res.Queue != f.queue || res.Removed != 2 {
			t.Fatalf("purge all: %+v", res)
		}
		if n := len(f.list(f.queue)); n != 0 {
			t.Fatalf("%d dead letters left", n)
		}
		channelstest.ConsistentlyTrue(t, 500*time.Millisecond, "purge delivers nothing", func() bool { return f.handled.Count() == 0 })
	})
}

// dlq move sends dead letters to another queue as they are; they are
// listed and replayed from there (--queue).
func TestDLQMove(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		f := newFixture(t, tg)
		es := f.deadLetters(3, 1)
		ids := map[string]bool{}
		f.expectCode(exitUsage, "--to", "dlq", "move", "--channel", "orders")
		out := f.mustRun("dlq", "move", "--dry-run", "--channel", "orders", "--to", "PARKED")
		if !strings.Contains(out, "dry run: 3 dead letters of "+f.queue+" would be moved") || !strings.Contains(out, f.parked) {
			t.Fatalf("move --dry-run:\n%s", out)
		}
		if n := len(f.list(f.queue)); n != 4 {
			t.Fatalf("a dry run moved: %d left", n)
		}
		out = f.mustRun("dlq", "move", "--channel", "orders", "--to", "PARKED")
		if !strings.Contains(out, "moved 3 of 3 dead letters of "+f.queue+" (3 removed)") {
			t.Fatalf("move:\n%s", out)
		}
		if left := f.list(f.queue); len(left) != 1 || left[0].OriginalChannel != f.ns+".refunds" {
			t.Fatalf("left in %s: %+v", f.queue, left)
		}
		parked := decode[[]dlq.Entry](t, f.mustRun("--queue", "PARKED", "--json", "dlq", "ls"))
		if len(parked) != 3 {
			t.Fatalf("%s holds %d, want 3", f.parked, len(parked))
		}
		for _, e := range parked {
			orig := byUser(t, es, idOf(t, e))
			if e.OriginalChannel != f.ns+".orders" || e.OriginalGroup != "billing" || e.ErrorMessage != orig.ErrorMessage ||
				e.Attempts != 1 || e.Headers["user-header"] != "kept" || string(e.Payload) != string(orig.Payload) {
				t.Fatalf("moved %+v, was %+v", e, orig)
			}
			ids[e.ID] = true
		}
		// Replayed from PARKED to their original channel.
		f.fixed.Store(true)
		if out := f.mustRun("--queue", "PARKED", "dlq", "replay"); !strings.Contains(out, "replayed 3 of 3 dead letters of "+f.parked) {
			t.Fatalf("replay from PARKED:\n%s", out)
		}
		channelstest.EventuallyTrue(t, 30*time.Second, "the parked orders handled", func() bool { return f.handled.Count() == 3 })
		for _, m := range f.handled.All() {
			checkReplayed(t, m, f.parked, ids)
		}
		if n := len(f.list(f.parked)); n != 0 {
			t.Fatalf("%d left in %s", n, f.parked)
		}
	})
}

func idOf(t testing.TB, e dlq.Entry) int {
	t.Helper()
	var u user
	if err := json.Unmarshal(e.Payload, &u); err != nil {
		t.Fatalf("payload %q: %v", e.Payload, err)
	}
	return u.ID
}

// rm-message deletes one stored message where the broker can (Redis,
// JetStream) and answers "unsupported" (exit 3) elsewhere, removing
// nothing.
func TestRmMessage(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		f := newFixture(t, tg)
		es := f.deadLetters(2, 0)
		one := byUser(t, es, 1)
		if !tg.removes {
			f.expectCode(exitUnsupported, "unsupported", "rm-message", dlq.DefaultQueue, one.ID)
			if n := len(f.list(f.queue)); n != 2 {
				t.Fatalf("an unsupported rm-message removed: %d left", n)
			}
			return
		}
		out := f.mustRun("rm-message", dlq.DefaultQueue, one.ID)
		if !strings.Contains(out, "removed message "+one.ID+" of "+f.queue) {
			t.Fatalf("rm-message:\n%s", out)
		}
		if left := f.list(f.queue); len(left) != 1 || left[0].ID == one.ID {
			t.Fatalf("left: %+v", left)
		}
		f.expectCode(exitNotFound, "not found", "rm-message", dlq.DefaultQueue, one.ID)
		f.expectCode(exitUsage, "CHANNEL and ID", "rm-message", dlq.DefaultQueue)
	})
}

// tail prints the messages sent to a channel after it started, and the
// group still gets every message.
func TestTail(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		f := newFixture(t, tg)
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		var out, errb channelstest.SyncBuffer
		done := make(chan int, 1)
		go func() {
			done <- runWith(ctx, tg.url(), f.ns, &out, &errb, "--json", "tail", "--count", "1", "orders-retry")
		}()
		// The tail starts on its own time: send until it prints one.
		sent, code, exited := 0, 0, false
		channelstest.EventuallyTrue(t, 30*time.Second, "tail prints a message", func() bool {
			sent++
			f.send("orders-retry", sent)
			select {
			case code = <-done:
				exited = true
				return true
			case <-time.After(100 * time.Millisecond):
				return strings.Contains(out.String(), "\n")
			}
		})
		if !exited {
			select {
			case code = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("tail --count 1 did not end after a message\n%s", out.String())
			}
		}
		if code != 0 {
			t.Fatalf("tail --count 1: exit %d\n%s\n%s", code, out.String(), errb.String())
		}
		var l struct {
			ID      string            `json:"id"`
			Channel string            `json:"channel"`
			Headers map[string]string `json:"headers"`
			Payload user              `json:"payload"`
		}
		line, _, _ := strings.Cut(out.String(), "\n")
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("tail line %q: %v", line, err)
		}
		if l.ID == "" || l.Channel != f.ns+".orders-retry" || l.Payload.ID < 1 || l.Payload.ID > sent || l.Headers["user-header"] != "kept" {
			t.Fatalf("tail line %s", line)
		}
		channelstest.EventuallyTrue(t, 30*time.Second, "the group gets every message", func() bool { return f.retried.Count() == sent })
		channelstest.ConsistentlyTrue(t, 500*time.Millisecond, "once each", func() bool { return f.retried.Count() == sent })
	})
}
