package broker_test

// Regression tests for hostile wire data: length bombs and deep nesting. They
// use only the Serializer API, so they also run (and fail, or crash) on a
// version without the bounds.

import (
	"bytes"
	"encoding/hex"
	"runtime"
	"strings"
	"testing"

	"github.com/microchannels/channels/broker"
)

type hostileTarget struct {
	Ints  []int             `json:"ints"`
	Bin   []byte            `json:"bin"`
	Str   string            `json:"str"`
	Map   map[string]any    `json:"map"`
	Attrs map[string]string `json:"attrs"`
}

// allocatedBy returns the bytes allocated while f runs.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMsgPackLengthBombs: a few bytes declaring a huge map, array, string,
// binary or extension must be refused before anything is allocated for it,
// whatever the target (the headers and $meta decode into maps, payloads into
// anything).
func TestMsgPackLengthBombs(t *testing.T) {
	bombs := map[string]string{
		"map32":          "df ffffffff",
		"map16":          "de ffff",
		"array32":        "dd ffffffff",
		"array16":        "dc ffff",
		"str32":          "db ffffffff",
		"bin32":          "c6 ffffffff",
		"ext32":          "c9 ffffffff 01",
		"map32 in map":   "81 a1 6b df ffffffff",
		"array32 in map": "81 a1 6b dd ffffffff",
		"bin32 in map":   "81 a1 6b c6 ffffffff",
		"field ints":     "81 a4 696e7473 dd ffffffff",
		"field bin":      "81 a3 62696e c6 ffffffff",
		"field str":      "81 a3 737472 db ffffffff",
		"field map":      "81 a3 6d6170 df ffffffff",
		"field attrs":    "81 a5 6174747273 df ffffffff",
	}
	targets := map[string]func() any{
		"any":               func() any { return new(any) },
		"map[string]any":    func() any { return new(map[string]any) },
		"map[string]string": func() any { return new(map[string]string) },
		"struct":            func() any { return new(hostileTarget) },
		"[]int":             func() any { return new([]int) },
		"[]byte":            func() any { return new([]byte) },
		"string":            func() any { return new(string) },
	}
	for name, h := range bombs {
		in := unhex(t, h)
		for tname, target := range targets {
			var err error
			alloc := allocatedBy(func() { err = broker.MsgPack{}.Unmarshal(in, target()) })
			if err == nil {
				t.Errorf("%s into %s: decoded without error", name, tname)
				continue
			}
			if alloc > 64<<10 {
				t.Errorf("%s into %s: %d bytes allocated for a %d-byte input (%v)", name, tname, alloc, len(in), err)
			}
		}
	}
}

// TestMsgPackTimestampAsMap: a valid timestamp whose 8 bytes read as a map
// holding a 4-billion-entry array. Where a map is expected, the library skips
// an extension's header and decodes its data as the map.
func TestMsgPackTimestampAsMap(t *testing.T) {
	cases := map[string]struct {
		hex    string
		target func() any
	}{
		"map[string]any":    {"d7 ff 81a16b dd ffffffff", func() any { return new(map[string]any) }},
		"map[string]string": {"d7 ff 81a16b dd ffffffff", func() any { return new(map[string]string) }},
		"struct field":      {"81 a3 6d6170 d7 ff 81a16b dd ffffffff", func() any { return new(hostileTarget) }},
	}
	for name, c := range cases {
		in := unhex(t, c.hex)
		var err error
		alloc := allocatedBy(func() { err = broker.MsgPack{}.Unmarshal(in, c.target()) })
		if err == nil || alloc > 64<<10 {
			t.Errorf("%s: err %v, %d bytes allocated", name, err, alloc)
		}
	}
}

// TestMsgPackBombErrorMessage: the error says what was declared and what is there.
func TestMsgPackBombErrorMessage(t *testing.T) {
	var m map[string]any
	err := broker.MsgPack{}.Unmarshal(unhex(t, "df ffffffff"), &m)
	if err == nil || !strings.Contains(err.Error(), "4294967295") {
		t.Fatalf("map32 bomb: %v, want an error naming the declared 4294967295 entries", err)
	}
	var s string
	err = broker.MsgPack{}.Unmarshal(unhex(t, "db ffffffff 61"), &s)
	if err == nil || !strings.Contains(err.Error(), "declared length 4294967295 exceeds the 1 bytes left") {
		t.Fatalf("str32 bomb: %v", err)
	}
}

// TestMsgPackDeepNesting: 100,000 nested one-element arrays decode fine with
// the library alone and then break whatever walks the value recursively.
func TestMsgPackDeepNesting(t *testing.T) {
	in := append(bytes.Repeat([]byte{0x91}, 100_000), 0xc0)
	var v any
	if err := (broker.MsgPack{}).Unmarshal(in, &v); err == nil {
		t.Fatal("100,000 nested arrays decoded without error")
	}
	// Nested maps too, in the place of a header value.
	in = append(bytes.Repeat([]byte{0x81, 0xa1, 'k'}, 100_000), 0xc0)
	var m map[string]any
	if err := (broker.MsgPack{}).Unmarshal(in, &m); err == nil {
		t.Fatal("100,000 nested maps decoded without error")
	}
}

// TestJSONDeepNesting: encoding/json accepts 10,000 levels; the JSON
// serializer accepts as many as MsgPack.
func TestJSONDeepNesting(t *testing.T) {
	in := strings.Repeat("[", 1000) + strings.Repeat("]", 1000)
	var v any
	if err := (broker.JSON{}).Unmarshal([]byte(in), &v); err == nil {
		t.Fatal("1,000 nested arrays decoded without error")
	}
	// Brackets inside strings do not count.
	in = `{"a":"` + strings.Repeat("[{", 1000) + `\"]"}`
	var m map[string]string
	if err := (broker.JSON{}).Unmarshal([]byte(in), &m); err != nil || len(m["a"]) != 2002 {
		t.Fatalf("brackets in a string: %v (%d bytes)", err, len(m["a"]))
	}
}

// TestMsgPackTrailingBytes: exactly one value.
func TestMsgPackTrailingBytes(t *testing.T) {
	var v any
	if err := (broker.MsgPack{}).Unmarshal([]byte{0x01, 0x02}, &v); err == nil {
		t.Fatal("two values decoded as one")
	}
}
