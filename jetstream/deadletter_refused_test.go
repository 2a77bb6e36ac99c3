package jetstream_test

import (
	"context"
	"errors"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/jetstream"
)

// Dead letters the server would refuse as they are end once in the
// dead-letter stream (sanitised or trimmed), or, when no copy can fit, are
// dropped after a bounded number of deliveries with an error log: never a
// loop. Cases: an error text with line breaks (errors.Join), a header name
// with a space (published by a third party), an error of 200 KB for a
// dead-letter stream with MaxMsgSize 16 KB, and a payload larger than the
// dead-letter stream's MaxMsgSize.
func TestDeadLettersRefusedAsTheyAre(t *testing.T) {
	debug.SetMemoryLimit(256 << 20)
	defer debug.SetMemoryLimit(-1)
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	var logs logSink
	dl := func(q string) *channels.DeadLettering {
		return &channels.DeadLettering{Enabled: true, QueueName: q, RefusalWindow: time.Second}
	}
	fail := func(err error) channels.Handler {
		return func(context.Context, *channels.Message) error { return channels.Permanent(err) }
	}
	bigErr := errors.New(strings.Repeat("x", 200<<10))
	small := func(n int32) []any {
		return []any{jetstream.ChannelOptions{DeadLetterStream: jetstream.StreamOptions{MaxMsgSize: n}}}
	}
	startPlugin(t, newAdapter(t, url, fast), &service{Name: "r", Channels: channels.Channels{
		"dl.linebreak": {Group: "g", DeadLettering: dl("DLQ_LB"),
			Handler: fail(errors.Join(errors.New("first"), errors.New("second\r\nthird")))},
		"dl.badname": {Group: "g", DeadLettering: dl("DLQ_NAME"), Handler: fail(errBoom)},
		"dl.bigerr":  {Group: "g", DeadLettering: dl("DLQ_BIGERR"), Handler: fail(bigErr), AdapterOptions: small(16 << 10)},
		"dl.bigmsg":  {Group: "g", DeadLettering: dl("DLQ_BIGMSG"), Handler: fail(errBoom), AdapterOptions: small(1 << 10)},
	}}, channels.WithLogger(logs.logger()), channels.WithMaxRetries(channels.NoRetries))
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	start := time.Now()
	if err := snd.SendToChannel(ctx, "dl.linebreak", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if err := snd.SendToChannel(ctx, "dl.bigerr", map[string]int{"n": 1}, channels.WithHeader("trace", "abc")); err != nil {
		t.Fatal(err)
	}
	if err := snd.SendToChannel(ctx, "dl.bigmsg", map[string]string{"s": strings.Repeat("y", 4<<10)}); err != nil {
		t.Fatal(err)
	}
	rawPublish(t, url, "dl.badname", []string{"bad name: v"}, []byte(`{"n":1}`))
	eventually(t, 5*time.Second, "the message with a bad header name stored", func() bool { return streamMsgs(j, "dl_badname") == 1 })
	for _, q := range []string{"DLQ_LB", "DLQ_NAME", "DLQ_BIGERR"} {
		eventually(t, 10*time.Second, q+" holds one dead letter", func() bool { return streamMsgs(j, q) == 1 })
	}
	for _, ch := range []string{"dl.linebreak", "dl.badname", "dl.bigerr", "dl.bigmsg"} {
		eventually(t, 20*time.Second, ch+" settled", func() bool { return consumerIdle(j, strings.ReplaceAll(ch, ".", "_"), "g") })
	}
	t.Logf("all settled in %s; refused dead-letter publishes logged: %d", time.Since(start), logs.count("dead-letter publish failed"))
	if n := streamMsgs(j, "DLQ_BIGMSG"); n != 0 {
		t.Fatalf("DLQ_BIGMSG holds %d messages: a copy over MaxMsgSize was stored?", n)
	}
	if logs.count("message dropped") != 1 {
		t.Fatalf("the copy that cannot fit was not dropped with an error log")
	}
	if n := logs.count("dead-letter publish failed"); n > 6 {
		t.Fatalf("%d refused dead-letter publishes: not bounded by MaxDeliveries", n)
	}
	consistently(t, 2*time.Second, "nothing more", func() bool {
		return streamMsgs(j, "DLQ_LB") == 1 && streamMsgs(j, "DLQ_NAME") == 1 && streamMsgs(j, "DLQ_BIGERR") == 1
	})
	st, _ := j.Stream(ctx, "DLQ_LB")
	rm, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v := rm.Header.Get("x-error-message"); !strings.Contains(v, `first\nsecond\r\nthird`) {
		t.Fatalf("x-error-message %q", v)
	}
	st, _ = j.Stream(ctx, "DLQ_BIGERR")
	// Trimmed to fit the stream's MaxMsgSize, the producer's headers kept
	// (not the library's minimal copy sent after a refusal).
	if rm, err = st.GetMsg(ctx, 1); err != nil || rm.Header.Get("x-error-trimmed") == "" || rm.Header.Get("trace") != "abc" {
		t.Fatalf("trimmed dead letter: %v %v", rm.Header, err)
	}
}
