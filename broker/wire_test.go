package broker_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
)

func TestMalformedErrors(t *testing.T) {
	cases := map[string]struct {
		hex    string
		offset int
		reason string
	}{
		"map32 bomb":      {"df ffffffff", 0, "map declares 4294967295 entries, more than the 0 bytes left can hold"},
		"nested bomb":     {"81 a1 6b dd ffffffff", 3, "array declares 4294967295 entries, more than the 0 bytes left can hold"},
		"str32 bomb":      {"db ffffffff 6162", 0, "declared length 4294967295 exceeds the 2 bytes left"},
		"bin8 short":      {"c4 05 00", 0, "declared length 5 exceeds the 1 bytes left"},
		"ext8 short":      {"c7 05 01 00", 0, "declared length 5 exceeds the 1 bytes left"},
		"array short":     {"92 91 c0", 3, "input ends where a value is expected"},
		"map too long":    {"82 a1 6b c0", 0, "map declares 2 entries, more than the 3 bytes left can hold"},
		"truncated int":   {"cd 01", 0, "input ends inside a 2-byte value"},
		"truncated len":   {"dd 0000", 0, "input ends inside a length field"},
		"never used":      {"91 c1", 1, "format byte 0xc1 is never used"},
		"empty ext":       {"c7 00 01", 0, "extension with no data is not supported"},
		"trailing":        {"c0 c0", 1, "1 trailing bytes after the value"},
		"empty":           {"", -1, "empty input"},
		"101 levels deep": {strings.Repeat("91", 101) + "c0", 100, "nesting deeper than 100"},
	}
	for name, c := range cases {
		var v any
		err := broker.MsgPack{}.Unmarshal(unhex(t, c.hex), &v)
		var me *broker.MalformedError
		if !errors.As(err, &me) || !errors.Is(err, broker.ErrMalformed) {
			t.Errorf("%s: %v, want a *MalformedError", name, err)
			continue
		}
		if me.Format != "MsgPack" || me.Offset != c.offset || me.Reason != c.reason {
			t.Errorf("%s: %+v, want offset %d reason %q", name, *me, c.offset, c.reason)
		}
	}
}

func TestDepthLimitIsInclusive(t *testing.T) {
	var v any
	in := append(bytes.Repeat([]byte{0x91}, broker.MaxDepth), 0xc0)
	if err := (broker.MsgPack{}).Unmarshal(in, &v); err != nil {
		t.Fatalf("MsgPack, %d levels: %v", broker.MaxDepth, err)
	}
	// Empty containers count as a level too.
	in = append(bytes.Repeat([]byte{0x91}, broker.MaxDepth), 0x90)
	if err := (broker.MsgPack{}).Unmarshal(in, &v); !errors.Is(err, broker.ErrMalformed) {
		t.Fatalf("MsgPack, %d levels: %v", broker.MaxDepth+1, err)
	}
	j := strings.Repeat(`{"a":[`, broker.MaxDepth/2) + strings.Repeat("]}", broker.MaxDepth/2)
	if err := (broker.JSON{}).Unmarshal([]byte(j), &v); err != nil {
		t.Fatalf("JSON, %d levels: %v", broker.MaxDepth, err)
	}
	j = "[" + j + "]"
	var me *broker.MalformedError
	if err := (broker.JSON{}).Unmarshal([]byte(j), &v); !errors.As(err, &me) || me.Format != "JSON" || j[me.Offset] != '[' {
		t.Fatalf("JSON, %d levels: %v", broker.MaxDepth+1, err)
	}
}

// Timestamps whose data starts with a byte that reads as a map header
// (fractions .537–.604 s and .931–.940 s in the 8-byte form) still decode,
// into time.Time and into an interface.
func TestMsgPackTimestamps(t *testing.T) {
	type withTime struct {
		At time.Time      `json:"at"`
		M  map[string]any `json:"m"`
	}
	for _, ns := range []int{0, 123, 540_000_000, 935_000_000, 999_999_999} {
		for _, sec := range []int64{1_700_000_000, 1 << 40} {
			at := time.Unix(sec, int64(ns)).UTC()
			b, err := broker.MsgPack{}.Marshal(withTime{At: at, M: map[string]any{"x": "y"}})
			if err != nil {
				t.Fatal(err)
			}
			var out withTime
			if err := (broker.MsgPack{}).Unmarshal(b, &out); err != nil || !out.At.Equal(at) || out.M["x"] != "y" {
				t.Errorf("%v into a struct: %v, %+v", at, err, out)
			}
			var v any
			if err := (broker.MsgPack{}).Unmarshal(b, &v); err != nil {
				t.Errorf("%v into any: %v", at, err)
			} else if got := v.(map[any]any)["at"].(time.Time); !got.Equal(at) {
				t.Errorf("%v into any: %v", at, got)
			}
		}
	}
}

func TestMsgPackMapKeys(t *testing.T) {
	var v any
	if err := (broker.MsgPack{}).Unmarshal(unhex(t, "82 c4 01 61 01 a1 62 02"), &v); err != nil {
		t.Fatal(err)
	}
	if want := map[any]any{"a": int8(1), "b": int8(2)}; !reflect.DeepEqual(v, want) {
		t.Fatalf("binary key: %#v", v)
	}
	for _, h := range []string{"81 90 c0", "81 80 c0", "91 81 91 00 c0"} {
		var v any
		if err := (broker.MsgPack{}).Unmarshal(unhex(t, h), &v); err == nil {
			t.Errorf("%s: a container as map key decoded into %#v", h, v)
		}
	}
	// A typed map with an interface key: the library panics on an
	// unhashable key; it comes back as an error.
	var m map[any]any
	if err := (broker.MsgPack{}).Unmarshal(unhex(t, "81 91 00 c0"), &m); err == nil {
		t.Errorf("container key into map[any]any: %#v", m)
	}
}

func TestSerializerRoundTrips(t *testing.T) {
	type order struct {
		ID    int               `json:"id"`
		Name  string            `json:"name"`
		Tags  []string          `json:"tags"`
		Attrs map[string]string `json:"attrs"`
		Bin   []byte            `json:"bin"`
		Big   string            `json:"big"`
	}
	in := order{ID: 7, Name: "x", Tags: []string{"a", "b"}, Attrs: map[string]string{"k": "v"},
		Bin: bytes.Repeat([]byte{0xdf}, 70_000), Big: strings.Repeat("é", 40_000)}
	for _, s := range []broker.Serializer{broker.JSON{}, broker.MsgPack{}} {
		b, err := s.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out order
		if err := s.Unmarshal(b, &out); err != nil || !reflect.DeepEqual(in, out) {
			t.Errorf("%s: %v", s.Name(), err)
		}
	}
}
