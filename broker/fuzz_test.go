package broker_test

// Fuzz tests of every decoder of wire data in this package. `go test` runs
// the seeds (and testdata/fuzz/) as unit tests; `make fuzz` fuzzes each target.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
)

// fuzzMemoryLimit is the soft memory limit of a fuzzing process: a decoder
// that allocates without bound makes the GC thrash, then the worker die,
// rather than the machine swap.
const fuzzMemoryLimit = 512 << 20

func fuzzSetup() { debug.SetMemoryLimit(fuzzMemoryLimit) }

var allocSample = []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}

// checkAlloc fails when f allocates more than a bounded decoder may for an
// input of n bytes: what the decoded value holds (at most some tens of bytes
// per input byte), plus slack.
func checkAlloc(t *testing.T, n int, what string, f func()) {
	t.Helper()
	metrics.Read(allocSample)
	before := allocSample[0].Value.Uint64()
	f()
	metrics.Read(allocSample)
	if got, limit := allocSample[0].Value.Uint64()-before, uint64(1<<20+256*n); got > limit {
		t.Fatalf("%s: %d bytes allocated for a %d-byte input", what, got, n)
	}
}

// hostileMsgPack are length bombs and deep nesting, in the places the
// decoders meet them.
var hostileMsgPack = []string{
	"df ffffffff", "de ffff", "dd ffffffff", "dc ffff", "db ffffffff", "da ffff", "c6 ffffffff",
	"c9 ffffffff 01", "c7 00 01", "81 a1 6b df ffffffff", "81 a1 6b c6 ffffffff",
	"81 a1 6b 91 91 91 91 dd ffffffff", "d7 ff 81a16b dd ffffffff", "81 a1 6d d7 ff 81a16b dd ffffffff",
	"d7 ff 80 00 00 00 65 53 f1 00", "81 90 c0", "81 c4 01 61 c0", "c1", "92 91 c0", "c0 c0",
	strings.Repeat("91", 101) + "c0", strings.Repeat("81 a1 6b ", 101) + "c0",
}

func mpSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, h := range hostileMsgPack {
		out = append(out, unhex(t, h))
	}
	for _, v := range []any{
		map[string]any{"id": 1, "name": "x", "tags": []string{"a"}, "at": time.Unix(1700000000, 540000000)},
		map[string]string{"$requestID": "n-1", "$level": "1", "k": "v"},
		[]any{nil, true, 1.5, int64(-1 << 40), uint64(1 << 63), "s", []byte{1, 2}},
	} {
		b, err := broker.MsgPack{}.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

var hostileJSON = []string{
	`{"id":1,"name":"x","tags":["a"],"n":null,"o":{"k":[1,2.5e300,true]}}`,
	`{"$requestID":"n-1","$level":1,"k":"v"}`, `[]`, `null`, `"s"`, `{"a":"\"[[[["}`,
	strings.Repeat("[", 101) + strings.Repeat("]", 101),
	strings.Repeat(`{"a":`, 101) + "1" + strings.Repeat("}", 101),
	strings.Repeat("[", 300), `{"a":1}{"b":2}`, `{"a":"\ud800"}`,
}

type fuzzPayload struct {
	ID    int               `json:"id"`
	Name  string            `json:"name"`
	Tags  []string          `json:"tags"`
	Ints  []int             `json:"ints"`
	Bin   []byte            `json:"bin"`
	Attrs map[string]string `json:"attrs"`
	Any   map[string]any    `json:"any"`
	At    time.Time         `json:"at"`
	Next  *fuzzPayload      `json:"next"`
}

// fuzzUnmarshal decodes data into the targets callers use, within the
// allocation bound, and walks what decoded the way handlers do.
func fuzzUnmarshal(t *testing.T, s broker.Serializer, data []byte) {
	var v any
	var err error
	checkAlloc(t, len(data), s.Name()+" into any", func() { err = s.Unmarshal(data, &v) })
	if err == nil {
		_ = fmt.Sprint(v)
		b, merr := s.Marshal(v)
		if merr != nil {
			t.Fatalf("%s: a decoded value does not encode: %v", s.Name(), merr)
		}
		var again any
		if err := s.Unmarshal(b, &again); err != nil {
			t.Fatalf("%s: a re-encoded value does not decode: %v\n%x", s.Name(), err, b)
		}
	}
	var m map[string]any
	checkAlloc(t, len(data), s.Name()+" into map", func() { err = s.Unmarshal(data, &m) })
	if err == nil {
		_ = fmt.Sprint(m)
	}
	var p fuzzPayload
	checkAlloc(t, len(data), s.Name()+" into struct", func() { _ = s.Unmarshal(data, &p) })
}

func FuzzMsgPackUnmarshal(f *testing.F) {
	fuzzSetup()
	for _, b := range mpSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) { fuzzUnmarshal(t, broker.MsgPack{}, data) })
}

func FuzzJSONUnmarshal(f *testing.F) {
	fuzzSetup()
	for _, s := range hostileJSON {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { fuzzUnmarshal(t, broker.JSON{}, data) })
}

// fuzzDecodeHeaders checks DecodeHeaders' contract on any input: bounded,
// no panic, at most MaxHeaders entries, the result of its general path
// (whatever its fast path took), and what it returns encodes and decodes
// back to itself.
func fuzzDecodeHeaders(t *testing.T, s broker.Serializer, data []byte) {
	var h map[string]string
	var err error
	checkAlloc(t, len(data), "DecodeHeaders", func() { h, err = broker.DecodeHeaders(s, data) })
	if len(data) > 0 && len(data) <= broker.MaxHeadersSize {
		gh, gerr := broker.DecodeAnyHeaders(s, data)
		if (err == nil) != (gerr == nil) || (err != nil && err.Error() != gerr.Error()) || (h == nil) != (gh == nil) || len(h) != len(gh) {
			t.Fatalf("DecodeHeaders gives %v, %v; the general path %v, %v", h, err, gh, gerr)
		}
		for k, v := range gh {
			if got, ok := h[k]; !ok || got != v {
				t.Fatalf("header %q: DecodeHeaders gives %q (%v), the general path %q", k, got, ok, v)
			}
		}
	}
	if err != nil {
		return
	}
	if len(h) > broker.MaxHeaders {
		t.Fatalf("%d headers", len(h))
	}
	b, err := broker.EncodeHeaders(s, h)
	if err != nil {
		// Rendering can make a value longer than its encoding (a
		// one-byte nil in an array is "<nil>"), past MaxHeadersSize.
		return
	}
	back, err := broker.DecodeHeaders(s, b)
	if err != nil || len(back) != len(h) {
		t.Fatalf("headers do not round-trip: %v\n%v\n%v", err, h, back)
	}
	for k, v := range h {
		if back[k] != v {
			t.Fatalf("header %q: %q, then %q", k, v, back[k])
		}
	}
}

func FuzzDecodeHeadersJSON(f *testing.F) {
	fuzzSetup()
	for _, s := range hostileJSON {
		f.Add([]byte(s))
	}
	// Near the edge of the fast path of string values.
	for _, s := range []string{`{}`, ` {"a" : "x"} `, `{"a":"x","a":"y"}`, `{"k":"null"}`, `{"a":"x","b":true}`, `{"a":"x","b":{}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecodeHeaders(t, broker.JSON{}, data) })
}

// FuzzEncodeHeadersJSON: EncodeHeaders writes what json.Marshal writes (its
// plain path included), and DecodeHeaders reads it back. data is split at
// NUL bytes into keys and values.
func FuzzEncodeHeadersJSON(f *testing.F) {
	fuzzSetup()
	for _, s := range []string{"k\x00v", "$requestID\x00n-1\x00$level\x001", "a\x00x\"y", "<\x00&", "\xff\x00\x01", "\u00e9\x00\u2028", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parts := strings.Split(string(data), "\x00")
		h := map[string]string{}
		for i := 0; i+1 < len(parts); i += 2 {
			h[parts[i]] = parts[i+1]
		}
		b, err := broker.EncodeHeaders(broker.JSON{}, h)
		want, werr := json.Marshal(h)
		if len(h) > broker.MaxHeaders || len(want) > broker.MaxHeadersSize {
			if err == nil {
				t.Fatalf("%d headers, %d bytes: no error", len(h), len(want))
			}
			return
		}
		if err != nil || werr != nil || !bytes.Equal(b, want) {
			t.Fatalf("EncodeHeaders: %s, %v; json.Marshal: %s, %v", b, err, want, werr)
		}
		back, err := broker.DecodeHeaders(broker.JSON{}, b)
		var jback map[string]string
		if jerr := json.Unmarshal(b, &jback); err != nil || jerr != nil || len(back) != len(jback) {
			t.Fatalf("decode %s: %v, %v (encoding/json: %v, %v)", b, back, err, jback, jerr)
		}
		for k, v := range jback {
			if back[k] != v {
				t.Fatalf("header %q: %q, encoding/json %q", k, back[k], v)
			}
		}
	})
}

func FuzzDecodeHeadersMsgPack(f *testing.F) {
	fuzzSetup()
	for _, b := range mpSeeds(f) {
		f.Add(b)
	}
	// Near the edge of the fast path of string values: binary key and value,
	// an integer value, an empty map, a repeated key.
	for _, h := range []string{"82 c4 01 6b c4 02 7676 a1 6e a1 76", "82 a1 6b a1 76 a1 6e 01", "80", "82 a1 6b a1 31 a1 6b a1 32"} {
		f.Add(unhex(f, h))
	}
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecodeHeaders(t, broker.MsgPack{}, data) })
}

// FuzzErrorFromHeaders decodes x-error-* headers as a dead-letter consumer
// reads them.
func FuzzErrorFromHeaders(f *testing.F) {
	fuzzSetup()
	b64 := base64.StdEncoding.EncodeToString
	f.Add("boom", "Error", b64([]byte("Error: boom\n  at x")), b64([]byte(`{"field":3}`)), "false", "1700000000123", "E42")
	f.Add("", "", "", "", "", "", "")
	f.Add("m", "n", "!!!not base64", "====", "maybe", "-9223372036854775808", "")
	f.Add("m", "n", b64(bytes.Repeat([]byte{0}, 1<<16)), b64([]byte("not json")), "1", "99999999999999999999", "")
	f.Fuzz(func(t *testing.T, msg, name, stack, data, retryable, ts, code string) {
		h := map[string]string{
			broker.HeaderErrorMessage: msg, broker.HeaderErrorName: name, broker.HeaderErrorStack: stack,
			broker.HeaderErrorData: data, broker.HeaderErrorRetryable: retryable,
			broker.HeaderErrorTimestamp: ts, broker.HeaderErrorCode: code,
		}
		var e *broker.RemoteError
		checkAlloc(t, len(msg)+len(name)+len(stack)+len(data)+len(retryable)+len(ts)+len(code), "ErrorFromHeaders",
			func() { e = broker.ErrorFromHeaders(h) })
		if e == nil {
			t.Fatal("x-error-message present, no error decoded")
		}
		if len(e.Stack) > len(stack) || len(e.Data) > len(data) {
			t.Fatalf("decoded more than the input: %d/%d stack, %d/%d data", len(e.Stack), len(stack), len(e.Data), len(data))
		}
		_ = e.Error()
		if len(e.Data) > 0 {
			if _, err := json.Marshal(e); err != nil {
				t.Fatalf("a decoded error does not marshal: %v", err)
			}
		}
		// What a consumer does with it: dead-letter it again.
		h2 := broker.ErrorToHeaders(e, time.Now())
		if e2 := broker.ErrorFromHeaders(h2); e2 == nil || e2.Message != e.Message {
			t.Fatalf("re-encoded error: %+v", e2)
		}
	})
}
