package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/dlq"
	"github.com/microchannels/channels/memory"
)

// bare is the memory adapter without the operations abilities, reachable
// as "baretest://name", for the exit code of an unsupported operation.
type bare struct{ broker.Adapter }

func init() {
	broker.Register("BareTest", []string{"baretest"}, func(u *url.URL) (broker.Adapter, error) {
		return bare{memory.New(memory.WithBus(memory.NewBus()))}, nil
	})
}

// faulty is the memory adapter of a named bus, reachable as
// "faultytest://name?faults", with the faults of a real broker:
// "unreadable" lists the dead letters whose payload is "undecodable" as
// an adapter that could not decode their headers; "keep" removes nothing
// (and says so); "keyed" lists each with a key (Kafka's record key);
// "untimed" lists those whose payload is "untimed" with no time; "twice"
// lists every dead letter twice; "invalid" refuses
// every send with broker.ErrInvalidOption; "unroutable" refuses every send
// as unroutable (broker.ErrNotFound).
type faulty struct {
	*memory.Adapter
	faults url.Values
}

func (f faulty) BrowseDeadLetters(ctx context.Context, q string, fn func(*broker.StoredMessage) bool) error {
	return f.Adapter.BrowseDeadLetters(ctx, q, func(m *broker.StoredMessage) bool {
		if f.faults.Has("unreadable") && string(m.Payload) == "undecodable" {
			m.Headers, m.DecodeError = nil, "msgpack: invalid code"
		}
		if f.faults.Has("untimed") && string(m.Payload) == "untimed" {
			m.Time = time.Time{}
			delete(m.Headers, "x-error-timestamp")
		}
		if f.faults.Has("keyed") {
			m.Key = []byte("key-" + string(m.Payload))
		}
		if f.faults.Has("twice") && !fn(m) {
			return false
		}
		return fn(m)
	})
}

func (f faulty) Publish(ctx context.Context, ch string, m *broker.Outgoing) error {
	switch {
	case f.faults.Has("invalid"):
		return fmt.Errorf("%w: the broker refused an option", broker.ErrInvalidOption)
	case f.faults.Has("escape"):
		return fmt.Errorf("%w: refused \x1b]0;owned\x07\x1b[2J %s", broker.ErrPublish, ch)
	case f.faults.Has("unroutable"):
		return fmt.Errorf("%w: %w: no queue is bound to %q", broker.ErrPublish, broker.ErrNotFound, ch)
	}
	return f.Adapter.Publish(ctx, ch, m)
}

func (f faulty) RemoveDeadLetters(ctx context.Context, q string, ids ...string) (int, error) {
	if f.faults.Has("keep") {
		return 0, nil
	}
	return f.Adapter.RemoveDeadLetters(ctx, q, ids...)
}

func init() {
	broker.Register("FaultyTest", []string{"faultytest"}, func(u *url.URL) (broker.Adapter, error) {
		return faulty{memory.New(memory.WithBus(memory.NamedBus(u.Host))), u.Query()}, nil
	})
}

// runFaulty runs the command on the test's bus through a faulty adapter.
func (e *env) runFaulty(faults string, args ...string) (code int, stdout, stderr string) {
	u := "faultytest://" + strings.TrimPrefix(e.url, "memory://") + "?" + faults
	return runArgs(append([]string{"--adapter", u}, args...)...)
}

var busSeq atomic.Int64

// env is one test's broker: a named memory bus the command reaches with
// its URL, and an adapter of the test on it.
type env struct {
	t   *testing.T
	url string
	a   *memory.Adapter
}

func newEnv(t *testing.T) *env {
	t.Helper()
	name := fmt.Sprintf("clitest%d", busSeq.Add(1))
	a := memory.New(memory.WithBus(memory.NamedBus(name)))
	if err := a.Connect(context.Background(), broker.Env{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()); a.Bus().Reset() })
	return &env{t: t, url: "memory://" + name, a: a}
}

// run runs the command on the test's bus.
func (e *env) run(args ...string) (code int, stdout, stderr string) {
	return runArgs(append([]string{"--adapter", e.url}, args...)...)
}

func runArgs(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Run(context.Background(), append([]string{"channels"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func (e *env) mustRun(args ...string) string {
	e.t.Helper()
	code, out, errs := e.run(args...)
	if code != 0 {
		e.t.Fatalf("%v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errs)
	}
	return out
}

// deadLetter writes a dead letter with the plugin's headers.
func (e *env) deadLetter(queue, channel string, cause error, payload string) string {
	e.t.Helper()
	h := broker.DeadLetterHeaders(&broker.Message{Channel: channel, Group: "billing", ID: "x", Attempt: 3}, cause, time.Now())
	if err := e.a.Publish(context.Background(), queue, &broker.Outgoing{Payload: []byte(payload), Headers: h}); err != nil {
		e.t.Fatal(err)
	}
	es, err := dlq.List(context.Background(), e.a, queue, dlq.Filter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return es[len(es)-1].ID
}

// consume subscribes group g to channel and returns what it receives.
func (e *env) consume(channel string) chan *broker.Message {
	e.t.Helper()
	got := make(chan *broker.Message, 100)
	sub, err := e.a.Subscribe(context.Background(), &broker.Channel{Name: channel, Group: "g", Handler: func(_ context.Context, m *broker.Message) error {
		got <- m
		return nil
	}})
	if err != nil {
		e.t.Fatal(err)
	}
	sub.Start()
	e.t.Cleanup(func() { _ = sub.Drain(context.Background()) })
	return got
}

func (e *env) left(queue string) int {
	e.t.Helper()
	es, err := dlq.List(context.Background(), e.a, queue, dlq.Filter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(es)
}

func TestLs(t *testing.T) {
	e := newEnv(t)
	e.consume("shop.orders")
	_ = e.a.Publish(context.Background(), "shop.orders", &broker.Outgoing{Payload: []byte("1")})
	_ = e.a.Publish(context.Background(), "other.x", &broker.Outgoing{Payload: []byte("1")})
	out := e.mustRun("--namespace", "shop", "ls")
	if !strings.Contains(out, "shop.orders") || !strings.Contains(out, " g ") || strings.Contains(out, "other.x") {
		t.Fatalf("ls:\n%s", out)
	}
	var cs []broker.ChannelInfo
	if err := json.Unmarshal([]byte(e.mustRun("--json", "ls")), &cs); err != nil || len(cs) != 2 {
		t.Fatalf("ls --json: %+v %v", cs, err)
	}
}

func TestDLQLsShow(t *testing.T) {
	e := newEnv(t)
	q := "shop.FAILED_MESSAGES"
	id := e.deadLetter(q, "shop.orders", errors.New("card declined"), `{"id":7}`)
	e.deadLetter(q, "shop.users", errors.New("smtp down"), `x`)

	out := e.mustRun("--namespace", "shop", "dlq", "ls")
	for _, want := range []string{"ID", id, "shop.orders", "billing", "Error", "card declined", "3", "smtp down"} {
		if !strings.Contains(out, want) {
			t.Fatalf("dlq ls lacks %q:\n%s", want, out)
		}
	}
	out = e.mustRun("--namespace", "shop", "dlq", "ls", "--channel", "orders")
	if !strings.Contains(out, "card declined") || strings.Contains(out, "smtp") {
		t.Fatalf("--channel:\n%s", out)
	}
	var es []dlq.Entry
	if err := json.Unmarshal([]byte(e.mustRun("--namespace", "shop", "--json", "dlq", "ls", "--error-contains", "SMTP")), &es); err != nil ||
		len(es) != 1 || es[0].OriginalChannel != "shop.users" {
		t.Fatalf("--json --error-contains: %+v %v", es, err)
	}
	if out := e.mustRun("--namespace", "shop", "dlq", "ls", "--since", "1h", "--limit", "1"); strings.Count(out, "shop.") != 1 {
		t.Fatalf("--since --limit:\n%s", out)
	}
	// The default queue without a namespace is empty.
	if out := e.mustRun("dlq", "ls"); strings.Contains(out, "shop") {
		t.Fatalf("default queue:\n%s", out)
	}

	out = e.mustRun("--namespace", "shop", "dlq", "show", id)
	for _, want := range []string{"channel:", "shop.orders", "x-error-message:", "card declined", "payload (JSON, 8 bytes):", "{\n  \"id\": 7\n}"} {
		if !strings.Contains(out, want) {
			t.Fatalf("dlq show lacks %q:\n%s", want, out)
		}
	}
	if code, _, errs := e.run("--namespace", "shop", "dlq", "show", "999999"); code != exitNotFound || !strings.Contains(errs, "not found") {
		t.Fatalf("show missing: %d %s", code, errs)
	}
}

func TestReplay(t *testing.T) {
	e := newEnv(t)
	q := "FAILED_MESSAGES"
	got := e.consume("orders")
	id1 := e.deadLetter(q, "orders", errors.New("timeout"), `{"n":1}`)
	id2 := e.deadLetter(q, "orders", errors.New("timeout"), `{"n":2}`)
	e.deadLetter(q, "orders", errors.New("bad input"), `{"n":3}`)

	out := e.mustRun("dlq", "replay", "--error-contains", "timeout", "--dry-run")
	if !strings.Contains(out, "dry run: 2 dead letters") || !strings.Contains(out, id1) || e.left(q) != 3 {
		t.Fatalf("dry run:\n%s", out)
	}
	out = e.mustRun("dlq", "replay", id1, id2)
	if !strings.Contains(out, "replayed 2 of 2") {
		t.Fatalf("replay:\n%s", out)
	}
	for i := 1; i <= 2; i++ {
		select {
		case m := <-got:
			if m.Attempt != 1 || m.Headers["x-error-message"] != "" || m.Headers[dlq.HeaderReplayedFrom] == "" || string(m.Payload) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("replayed message %d: %+v", i, m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("nothing replayed")
		}
	}
	if e.left(q) != 1 {
		t.Fatalf("left %d", e.left(q))
	}
	// --to adds the namespace.
	other := e.consume("ns.retry")
	code, _, errs := e.run("--namespace", "ns", "--queue", "..bad", "dlq", "replay")
	if code != exitUsage {
		t.Fatalf("bad queue: %d %s", code, errs)
	}
	_ = e.a.Publish(context.Background(), "ns.FAILED_MESSAGES", &broker.Outgoing{Payload: []byte("z"),
		Headers: map[string]string{"x-original-channel": "ns.orders", "x-original-group": "old"}})
	e.mustRun("--namespace", "ns", "dlq", "replay", "--to", "retry")
	select {
	case m := <-other:
		if string(m.Payload) != "z" {
			t.Fatalf("to: %q", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing replayed to --to")
	}
}

func TestPurgeAndMove(t *testing.T) {
	e := newEnv(t)
	q := "FAILED_MESSAGES"
	e.deadLetter(q, "orders", errors.New("a"), "1")
	e.deadLetter(q, "users", errors.New("b"), "2")
	e.deadLetter(q, "users", errors.New("c"), "3")
	if code, _, errs := e.run("dlq", "purge", "--channel", "orders"); code != exitUsage || !strings.Contains(errs, "--yes") || e.left(q) != 3 {
		t.Fatalf("purge without --yes: %d %s", code, errs)
	}
	if out := e.mustRun("dlq", "purge", "--channel", "orders", "--yes"); !strings.Contains(out, "removed 1") || e.left(q) != 2 {
		t.Fatalf("purge:\n%s", out)
	}
	if code, _, _ := e.run("dlq", "move", "--channel", "users"); code != exitUsage {
		t.Fatalf("move without --to: %d", code)
	}
	if out := e.mustRun("dlq", "move", "--error-contains", "b", "--to", "PARKED"); !strings.Contains(out, "moved 1 of 1") {
		t.Fatalf("move:\n%s", out)
	}
	out := e.mustRun("--queue", "PARKED", "dlq", "ls")
	if !strings.Contains(out, "users") || e.left(q) != 1 {
		t.Fatalf("moved:\n%s", out)
	}
}

func TestRmMessage(t *testing.T) {
	e := newEnv(t)
	_ = e.a.Publish(context.Background(), "ns.orders", &broker.Outgoing{Payload: []byte("1")})
	es, _ := dlq.List(context.Background(), e.a, "ns.orders", dlq.Filter{})
	e.mustRun("--namespace", "ns", "rm-message", "orders", es[0].ID)
	if code, _, _ := e.run("--namespace", "ns", "rm-message", "orders", es[0].ID); code != exitNotFound {
		t.Fatalf("second rm: %d", code)
	}
	if code, _, _ := e.run("rm-message", "orders"); code != exitUsage {
		t.Fatalf("rm without id: %d", code)
	}
}

func TestTail(t *testing.T) {
	for _, asJSON := range []bool{true, false} {
		t.Run(fmt.Sprint("json=", asJSON), func(t *testing.T) {
			e := newEnv(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out, errb channelstest.SyncBuffer
			done := make(chan int, 1)
			args := []string{"channels", "--adapter", e.url, "tail", "--count", "1", "orders"}
			if asJSON {
				args = append([]string{"channels", "--json"}, args[1:]...)
			}
			go func() { done <- Run(ctx, args, &out, &errb) }()
			// The tail starts asynchronously: send until it has seen one.
			for {
				_ = e.a.Publish(ctx, "orders", &broker.Outgoing{Payload: []byte(`{"live": true}`), Headers: map[string]string{"h": "v\x1b[31m"}})
				select {
				case code := <-done:
					if code != 0 {
						t.Fatalf("tail: exit %d: %s", code, errb.String())
					}
					if !asJSON {
						if !strings.Contains(out.String(), `{h=v\x1b[31m} {"live":true}`) {
							t.Fatalf("tail output %q", out.String())
						}
						return
					}
					var l tailLine
					if err := json.Unmarshal([]byte(out.String()), &l); err != nil || string(l.Payload) != `{"live":true}` || l.Headers["h"] != "v\x1b[31m" {
						t.Fatalf("tail output %q: %v", out.String(), err)
					}
					return
				case <-time.After(10 * time.Millisecond):
				case <-ctx.Done():
					t.Fatal("tail saw nothing")
				}
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"dlq", "ls"}, exitOK, ""},
		{[]string{"nope"}, exitUsage, "unknown command"},
		{[]string{"dlq", "nope"}, exitUsage, "unknown command"},
		{[]string{"--bogus", "ls"}, exitUsage, "bogus"},
		{[]string{"dlq", "ls", "--since", "yesterday"}, exitUsage, "--since"},
		{[]string{"dlq", "ls", "--channel", "a b"}, exitUsage, "--channel"},
		{[]string{"dlq", "replay", "1", "--to", "x"}, exitUsage, "flags go before arguments"},
		{[]string{"dlq", "show"}, exitUsage, "one ID"},
		{[]string{"tail"}, exitUsage, "CHANNEL"},
	} {
		code, _, errs := e.run(c.args...)
		if code != c.code || !strings.Contains(errs, c.err) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, errs, c.code, c.err)
		}
	}
	if code, _, errs := runArgs("ls"); code != exitUsage || !strings.Contains(errs, "CHANNELS_ADAPTER") {
		t.Errorf("no adapter: %d %q", code, errs)
	}
	if code, _, _ := runArgs("--adapter", "nosuch://x", "ls"); code != exitUsage {
		t.Errorf("unknown adapter: %d", code)
	}
	for _, args := range [][]string{{"ls"}, {"dlq", "ls"}, {"dlq", "purge", "--yes"}, {"rm-message", "c", "1"}, {"tail", "c"}} {
		code, _, errs := runArgs(append([]string{"--adapter", "baretest://x"}, args...)...)
		if code != exitUnsupported || !strings.Contains(errs, "unsupported") || !strings.Contains(errs, "Memory") {
			t.Errorf("%v on an adapter without the ability: %d %q", args, code, errs)
		}
	}
}

func TestCredentialsNeverPrinted(t *testing.T) {
	const secret = "s3cr3tPassw0rd"
	url := "redis://user:" + secret + "@127.0.0.1:1/0"
	code, out, errs := runArgs("--adapter", url, "--timeout", "2s", "dlq", "ls")
	if code != exitFailed || strings.Contains(out+errs, secret) {
		t.Fatalf("exit %d, output %q %q", code, out, errs)
	}
	for _, form := range []string{"-a=", "--adapter=", "-adapter="} {
		// The password again where no URL-shaped redaction finds it: only
		// the secrets taken from the command line hide it.
		code, out, errs := runArgs(form+"redis://user:"+secret+"@127.0.0.1:1/0?db="+secret, "ls")
		if code != exitUsage || strings.Contains(out+errs, secret) {
			t.Fatalf("%s: exit %d, output %q %q", form, code, out, errs)
		}
	}
	t.Setenv("CHANNELS_ADAPTER", "amqp://guest:"+secret+"@127.0.0.1:1/")
	code, out, errs = runArgs("--timeout", "2s", "ls")
	if code != exitFailed || strings.Contains(out+errs, secret) {
		t.Fatalf("env adapter: exit %d, output %q %q", code, out, errs)
	}
	_, out, errs = runArgs("--help")
	if strings.Contains(out+errs, secret) {
		t.Fatalf("help shows the adapter URL: %q", out)
	}
}

// TestHelpHasExamples runs --help of every command: each lists its flags
// and an example.
func TestHelpHasExamples(t *testing.T) {
	var walk func(path []string, cmds []*cli.Command)
	check := func(path []string, flags []cli.Flag) {
		code, out, errs := runArgs(append(path, "--help")...)
		if code != 0 {
			t.Errorf("%v --help: exit %d %s", path, code, errs)
		}
		if !strings.Contains(out, "Example") {
			t.Errorf("%v --help has no example:\n%s", path, out)
		}
		for _, f := range flags {
			if !strings.Contains(out, "--"+f.Names()[0]) {
				t.Errorf("%v --help does not list --%s", path, f.Names()[0])
			}
		}
	}
	app := newApp(nil, nil)
	check(nil, app.Flags)
	walk = func(path []string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := append(append([]string(nil), path...), c.Name)
			check(p, c.Flags)
			walk(p, c.Subcommands)
		}
	}
	walk(nil, app.Commands)
}

func TestUnreadableRefusedUnlessForced(t *testing.T) {
	e := newEnv(t)
	q := "FAILED_MESSAGES"
	got := e.consume("retry")
	id := e.deadLetter(q, "orders", errors.New("timeout"), "undecodable")
	run := func(args ...string) (int, string, string) { return e.runFaulty("unreadable", args...) }
	if code, out, errs := run("dlq", "ls"); code != 0 || !strings.Contains(out, "(unreadable)") || !strings.Contains(out, "msgpack: invalid code") {
		t.Fatalf("ls: %d\n%s%s", code, out, errs)
	}
	if code, out, errs := run("dlq", "show", id); code != 0 || !strings.Contains(out, "unreadable:") {
		t.Fatalf("show: %d\n%s%s", code, out, errs)
	}
	code, out, errs := run("--json", "dlq", "replay", "--to", "retry")
	var r struct {
		Sent    int
		Entries []struct{ DecodeError, Status, Error string }
	}
	if code != exitFailed || json.Unmarshal([]byte(out), &r) != nil || r.Sent != 0 || len(r.Entries) != 1 ||
		r.Entries[0].Status != "refused" || r.Entries[0].DecodeError == "" || !strings.Contains(errs, "--force") && !strings.Contains(errs, "Force") {
		t.Fatalf("replay: %d\n%s%s", code, out, errs)
	}
	if e.left(q) != 1 {
		t.Fatal("an unreadable dead letter was removed")
	}
	if out := func() string {
		code, out, errs := run("dlq", "replay", "--force", "--to", "retry")
		if code != 0 {
			t.Fatalf("forced: %d %s%s", code, out, errs)
		}
		return out
	}(); !strings.Contains(out, "replayed 1 of 1") {
		t.Fatalf("forced:\n%s", out)
	}
	select {
	case m := <-got:
		if string(m.Payload) != "undecodable" {
			t.Fatalf("forced: %q", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing replayed")
	}
}

func TestSentButNotRemoved(t *testing.T) {
	e := newEnv(t)
	e.consume("orders")
	e.deadLetter("FAILED_MESSAGES", "orders", errors.New("timeout"), "1")
	code, out, errs := e.runFaulty("keep", "--json", "dlq", "replay")
	var r struct {
		Sent, Removed int
		Entries       []struct{ Status, Error string }
	}
	if code != exitFailed || json.Unmarshal([]byte(out), &r) != nil || r.Sent != 1 || r.Removed != 0 ||
		len(r.Entries) != 1 || r.Entries[0].Status != "kept" || !strings.Contains(errs, "not removed") {
		t.Fatalf("replay: %d\n%s%s", code, out, errs)
	}
}

func TestExitCodesOfOperations(t *testing.T) {
	e := newEnv(t)
	q := "FAILED_MESSAGES"
	e.consume("orders")
	id := e.deadLetter(q, "orders", errors.New("timeout"), "1")
	for _, c := range []struct {
		faults string
		args   []string
		code   int
		err    string
	}{
		{"", []string{"dlq", "replay", "nosuch"}, exitNotFound, `"nosuch"`},
		{"", []string{"dlq", "replay", "--dry-run", "nosuch"}, exitNotFound, `"nosuch"`},
		{"", []string{"dlq", "move", "--to", "PARKED", "nosuch"}, exitNotFound, `"nosuch"`},
		{"", []string{"dlq", "purge", "--yes", "nosuch"}, exitNotFound, `"nosuch"`},
		{"invalid", []string{"dlq", "replay", id}, exitFailed, "refused an option"},
		{"unroutable", []string{"dlq", "replay", id}, exitFailed, "no queue is bound"},
		{"unroutable", []string{"dlq", "move", "--to", "PARKED", id}, exitFailed, "no queue is bound"},
	} {
		code, out, errs := e.runFaulty(c.faults, c.args...)
		if code != c.code || !strings.Contains(errs, c.err) {
			t.Errorf("%s %v: exit %d, stderr %q; want %d and %q\n%s", c.faults, c.args, code, errs, c.code, c.err, out)
		}
		if e.left(q) != 1 {
			t.Fatalf("%s %v: the dead letter is gone", c.faults, c.args)
		}
	}
	// The IDs found are handled, the exit code tells of the others.
	if code, out, errs := e.run("dlq", "purge", "--yes", id, "nosuch"); code != exitNotFound || !strings.Contains(out, "removed 1") || e.left(q) != 0 {
		t.Fatalf("purge of one found, one not: %d\n%s%s", code, out, errs)
	}
	if code, _, errs := runArgs("--adapter", "redis://127.0.0.1:1/0?nosuchoption=1", "ls"); code != exitUsage {
		t.Errorf("bad URL option: %d %s", code, errs)
	}
}

func TestDestinations(t *testing.T) {
	e := newEnv(t)
	q := "ns.FAILED_MESSAGES"
	retry := e.consume("ns.retry")
	e.deadLetter(q, "ns.orders", errors.New("timeout"), "1")
	// A full name, as dlq ls prints it, is not prefixed again.
	e.mustRun("--namespace", "ns", "dlq", "replay", "--to", "ns.retry")
	select {
	case <-retry:
	case <-time.After(5 * time.Second):
		t.Fatal("nothing replayed to ns.retry")
	}
	// A dead letter naming a channel of another namespace is refused.
	other := e.consume("billing.payments")
	_ = e.a.Publish(context.Background(), q, &broker.Outgoing{Payload: []byte("forged"),
		Headers: map[string]string{"x-original-channel": "billing.payments", "x-error-message": "e"}})
	if code, out, errs := e.run("--namespace", "ns", "dlq", "replay"); code != exitFailed || !strings.Contains(errs, "out of namespace") || e.left(q) != 1 {
		t.Fatalf("forged: %d\n%s%s", code, out, errs)
	}
	if code, out, errs := e.run("--namespace", "ns", "dlq", "move", "--to", "FAILED_MESSAGES"); code != exitFailed || !strings.Contains(errs, "own queue") || e.left(q) != 1 {
		t.Fatalf("move to itself: %d\n%s%s", code, out, errs)
	}
	e.mustRun("--namespace", "ns", "dlq", "replay", "--any-namespace")
	select {
	case m := <-other:
		if string(m.Payload) != "forged" {
			t.Fatalf("%q", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing replayed with --any-namespace")
	}
}

func TestErrorTextEscaped(t *testing.T) {
	e := newEnv(t)
	q := "FAILED_MESSAGES"
	e.consume("orders")
	e.deadLetter(q, "orders", errors.New("timeout"), "1")
	code, _, errs := e.runFaulty("escape", "dlq", "replay")
	if code != exitFailed || strings.ContainsAny(errs, "\x1b\x07") || !strings.Contains(errs, `\x1b[2J`) {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
}

func TestShowKey(t *testing.T) {
	e := newEnv(t)
	id := e.deadLetter("FAILED_MESSAGES", "orders", errors.New("timeout"), "1")
	if code, out, errs := e.runFaulty("keyed", "dlq", "show", id); code != 0 || !strings.Contains(out, "key:") || !strings.Contains(out, "key-1") {
		t.Fatalf("show: %d\n%s%s", code, out, errs)
	}
}

func TestLongReplay(t *testing.T) {
	e := newEnv(t)
	q := "ns.FAILED_MESSAGES"
	e.consume("ns.orders")
	for i := range 3 {
		e.deadLetter(q, "ns.orders", errors.New("timeout"), fmt.Sprint(i))
	}
	// --timeout bounds the connection, not a replay that takes longer.
	start := time.Now()
	out := e.mustRun("--namespace", "ns", "--timeout", "100ms", "dlq", "replay", "--rate", "10")
	if !strings.Contains(out, "replayed 3 of 3") || time.Since(start) < 150*time.Millisecond || e.left(q) != 0 {
		t.Fatalf("replay at 10/s in %v:\n%s", time.Since(start), out)
	}
	if code, _, errs := e.run("dlq", "replay", "--rate", "-1"); code != exitUsage {
		t.Fatalf("--rate -1: %d %s", code, errs)
	}
	// --continue-on-error: the good ones go, the others are reported.
	_ = e.a.Publish(context.Background(), q, &broker.Outgoing{Payload: []byte("forged"),
		Headers: map[string]string{"x-original-channel": "billing.payments", "x-error-message": "e"}})
	e.deadLetter(q, "ns.orders", errors.New("timeout"), "good")
	if code, _, errs := e.run("--namespace", "ns", "dlq", "replay"); code != exitFailed || e.left(q) != 2 {
		t.Fatalf("without --continue-on-error: %d %s", code, errs)
	}
	code, out, errs := e.run("--namespace", "ns", "--json", "dlq", "replay", "--continue-on-error")
	if code != exitFailed || !strings.Contains(errs, "out of namespace") || !strings.Contains(out, `"status": "refused"`) ||
		!strings.Contains(out, `"status": "done"`) || e.left(q) != 1 {
		t.Fatalf("--continue-on-error: %d\n%s%s", code, out, errs)
	}
}

func TestReplayGroupFlags(t *testing.T) {
	e := newEnv(t)
	e.deadLetter("FAILED_MESSAGES", "orders", errors.New("timeout"), "1")
	if code, _, errs := e.run("dlq", "replay", "--group", "billing"); code != exitUnsupported || !strings.Contains(errs, "every group") || e.left("FAILED_MESSAGES") != 1 {
		t.Fatalf("--group on memory: %d %s", code, errs)
	}
	if code, _, errs := e.run("dlq", "replay", "--group", "a", "--original-group"); code != exitUsage {
		t.Fatalf("both: %d %s", code, errs)
	}
}

func TestLsLimitNoteAndPurgeDryRun(t *testing.T) {
	e := newEnv(t)
	q := "FAILED_MESSAGES"
	id := e.deadLetter(q, "orders", errors.New("a"), "1")
	e.deadLetter(q, "orders", errors.New("b"), "2")
	code, out, errs := e.run("--json", "dlq", "ls", "--limit", "1")
	var es []dlq.Entry
	if code != 0 || json.Unmarshal([]byte(out), &es) != nil || len(es) != 1 || !strings.Contains(errs, "--limit 0 for all") {
		t.Fatalf("--json ls --limit 1: %d\n%s%s", code, out, errs)
	}
	out = e.mustRun("dlq", "purge", "--dry-run", "--error-contains", "a")
	if !strings.Contains(out, id) || !strings.Contains(out, "dry run: 1 dead letters") || e.left(q) != 2 {
		t.Fatalf("purge --dry-run:\n%s", out)
	}
	if code, _, errs := e.run("dlq", "purge", "--dry-run", "nosuch"); code != exitNotFound || e.left(q) != 2 {
		t.Fatalf("purge --dry-run of a missing ID: %d %s", code, errs)
	}
}

func TestSince(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"7d": now.AddDate(0, 0, -7), "0d": now, "36h": now.Add(-36 * time.Hour),
		"2026-03-01T00:00:00Z": time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		"2026-03-01":           time.Date(2026, 3, 1, 0, 0, 0, 0, time.Local),
	} {
		if got, err := parseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("%s: %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"-1d", "d", "7days", "1.5d"} {
		if _, err := parseSince(in, now); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
	e := newEnv(t)
	e.deadLetter("FAILED_MESSAGES", "orders", errors.New("a"), "untimed")
	e.deadLetter("FAILED_MESSAGES", "orders", errors.New("a"), "timed")
	code, out, errs := e.runFaulty("untimed", "dlq", "ls", "--since", "1d")
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(errs, "1 dead letters with no time left out by --since") {
		t.Fatalf("ls --since: %d\n%s%s", code, out, errs)
	}
}

func TestJSONPayloadsAsTail(t *testing.T) {
	e := newEnv(t)
	e.deadLetter("FAILED_MESSAGES", "orders", errors.New("a"), `{"n":1}`)
	out := e.mustRun("--json", "dlq", "ls")
	var es []map[string]any
	if err := json.Unmarshal([]byte(out), &es); err != nil || len(es) != 1 {
		t.Fatalf("%v\n%s", err, out)
	}
	if p, ok := es[0]["payload"].(map[string]any); !ok || p["n"] != 1.0 {
		t.Fatalf("payload %#v", es[0]["payload"])
	}
	out = e.mustRun("--json", "dlq", "replay", "--dry-run")
	var r struct{ Entries []map[string]any }
	if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Entries) != 1 || r.Entries[0]["status"] != "pending" || r.Entries[0]["to"] != "orders" {
		t.Fatalf("%v\n%s", err, out)
	}
}
