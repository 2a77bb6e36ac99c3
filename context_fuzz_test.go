package channels

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"testing"

	"go-micro.dev/v4/metadata"

	"github.com/microchannels/channels/broker"
)

// FuzzContextHeaders feeds the context headers of a delivery ($meta, as
// base64 of the serialized meta, and $level) to the handler context builder,
// then does what a handler does with the result: read the CallInfo and the
// go-micro metadata, print them, and send downstream (which serializes the
// meta again, to be decoded by the next consumer).
func FuzzContextHeaders(f *testing.F) {
	debug.SetMemoryLimit(512 << 20)
	mp := func(h string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	// (raw meta, already-encoded $meta used when raw is empty, $level, MsgPack?)
	f.Add([]byte(`{"tenant":"acme","n":1,"o":{"k":[1,2]}}`), "", "1", false)
	f.Add(mp("82 a6 74656e616e74 a4 61636d65 a1 6e 01"), "", "0", true)
	f.Add([]byte(nil), "not base64!", "x", false)
	f.Add([]byte(nil), base64.StdEncoding.EncodeToString([]byte("[1,2]")), "-9999999999999999999", false)
	f.Add(mp("df ffffffff"), "", "1", true)
	f.Add(mp("81 a1 6b dd ffffffff"), "", "1", true)
	f.Add(mp("d7 ff 81a16b dd ffffffff"), "", "1", true)
	f.Add(mp("81 a1 6b "+strings.Repeat("91", 200)+"c0"), "", "1", true)
	f.Add([]byte(`{"k":`+strings.Repeat("[", 200)+strings.Repeat("]", 200)+`}`), "", "1", false)
	f.Fuzz(func(t *testing.T, raw []byte, enc, level string, msgpack bool) {
		var ser broker.Serializer = broker.JSON{}
		if msgpack {
			ser = broker.MsgPack{}
		}
		if len(raw) > 0 {
			enc = base64.StdEncoding.EncodeToString(raw)
		}
		p := &Plugin{o: options{serializer: ser}, nodeID: "fuzz"}
		r := &resolved{service: "svc", ch: &broker.Channel{Name: "ch", Group: "g"}}
		var downstream map[string]string
		h := p.contextWrapper(r, func(ctx context.Context, msg *broker.Message) error {
			ci, ok := FromContext(ctx)
			if !ok {
				t.Fatal("no CallInfo")
			}
			_ = fmt.Sprintf("%+v", ci)
			if _, err := json.Marshal(ci.Meta); err != nil {
				_ = fmt.Sprint(ci.Meta)
			}
			md, _ := metadata.FromContext(ctx)
			_ = fmt.Sprint(md)
			out, err := p.outgoingHeaders(ctx, map[string]string{"k": "v"})
			if err != nil {
				return err
			}
			downstream = out
			return nil
		})
		msg := &broker.Message{Channel: "ch", ID: "1-0",
			Headers: map[string]string{broker.HeaderMeta: enc, broker.HeaderLevel: level, broker.HeaderRequestID: "r"}}
		err := h(context.Background(), msg)
		if err != nil {
			var de *broker.DecodeError
			if !errors.As(err, &de) || de.Field != broker.HeaderMeta {
				// Serializing a decoded meta again may fail (a MsgPack
				// meta decoded into a JSON-unfriendly value, say); it is
				// reported, never a panic.
				if !strings.Contains(err.Error(), "serialize $meta") {
					t.Fatalf("unexpected error: %v", err)
				}
			}
			return
		}
		// The next consumer reads what was sent downstream.
		if m, ok := downstream[broker.HeaderMeta]; ok {
			if _, err := p.decodeMeta(m); err != nil {
				t.Fatalf("$meta sent downstream does not decode: %v", err)
			}
		}
	})
}
