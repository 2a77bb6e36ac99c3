package broker_test

// Memory amplification (issue 26, item 4): what hostile input of 1 MiB
// makes the decoders allocate, per hostile byte. Refused input must be
// refused while it is counted, before the decoder builds anything; input
// within the bounds costs at most a small constant per byte.

import (
	"bytes"
	"encoding/binary"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/microchannels/channels/broker"
)

const hostileSize = 1 << 20

// msgpackArray wraps n items (already encoded in items) in an array32.
func msgpackArray(n int, items []byte) []byte {
	b := []byte{0xdd, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(n))
	return append(b, items...)
}

// msgpackMap wraps n pairs in a map32.
func msgpackMap(n int, pairs []byte) []byte {
	b := []byte{0xdf, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(n))
	return append(b, pairs...)
}

// jsonList is "[" + n times item, comma separated, + "]".
func jsonList(open, item, close string, n int) []byte {
	var b bytes.Buffer
	b.Grow(len(item)*n + n + 2)
	b.WriteString(open)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strings.ReplaceAll(item, "#", itoa(i)))
	}
	b.WriteString(close)
	return b.Bytes()
}

func itoa(i int) string {
	var buf [20]byte
	n := len(buf)
	for {
		n--
		buf[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			break
		}
	}
	return string(buf[n:])
}

type hostileCase struct {
	name   string
	ser    broker.Serializer
	in     []byte
	target func() any
}

func hostileCases() []hostileCase {
	n := hostileSize
	anyT := func() any { return new(any) }
	mapT := func() any { return new(map[string]any) }
	return []hostileCase{
		{"MsgPack array of empty maps", broker.MsgPack{}, msgpackArray(n, bytes.Repeat([]byte{0x80}, n)), anyT},
		{"MsgPack array of empty arrays", broker.MsgPack{}, msgpackArray(n, bytes.Repeat([]byte{0x90}, n)), anyT},
		{"MsgPack map of empty maps", broker.MsgPack{}, msgpackMap(n/2, bytes.Repeat([]byte{0x01, 0x80}, n/2)), mapT},
		{"MsgPack array of one-entry maps", broker.MsgPack{}, msgpackArray(n/3, bytes.Repeat([]byte{0x81, 0xa0, 0xc0}, n/3)), anyT},
		{"JSON array of empty objects", broker.JSON{}, jsonList("[", "{}", "]", n/3), anyT},
		{"JSON array of empty arrays", broker.JSON{}, jsonList("[", "[]", "]", n/3), anyT},
		{"JSON array of zeros", broker.JSON{}, jsonList("[", "0", "]", n/2), anyT},
		{"MsgPack array of nils", broker.MsgPack{}, msgpackArray(n, bytes.Repeat([]byte{0xc0}, n)), anyT},
		{"JSON object of empty objects", broker.JSON{}, jsonList("{", `"#":{}`, "}", n/10), mapT},
	}
}

// TestHostileAllocationPerByte: 1 MiB of empty containers is refused, and
// the refusal costs next to nothing: below one allocated byte per hostile
// byte (today's code: 64 bytes per byte for MsgPack empty maps, 43 for the
// JSON array of empty objects). It runs under a memory limit, so that a
// regression shows as GC pressure rather than as a machine out of memory.
func TestHostileAllocationPerByte(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(256 << 20))
	for _, c := range hostileCases() {
		t.Run(c.name, func(t *testing.T) {
			var err error
			alloc := allocatedBy(func() { err = c.ser.Unmarshal(c.in, c.target()) })
			perByte := float64(alloc) / float64(len(c.in))
			t.Logf("%d bytes in, %d allocated (%.2f per byte): %v", len(c.in), alloc, perByte, err)
			if err == nil {
				t.Errorf("decoded without error")
			}
			if perByte > 1 {
				t.Errorf("%.2f bytes allocated per hostile byte, want < 1", perByte)
			}
		})
	}
}

// TestHostileHeadersAllocation: a 1 MiB headers field of more than
// MaxHeaders entries is refused while the entries are counted (today's
// code decoded all of them first: 40 MiB).
func TestHostileHeadersAllocation(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(256 << 20))
	// fill is the number of items of size bytes (at most) that fit in
	// MaxHeadersSize.
	fill := func(item string) int { return (broker.MaxHeadersSize - 16) / (len(item) + 6) }
	cases := map[string]struct {
		ser broker.Serializer
		in  []byte
	}{
		"JSON strings":     {broker.JSON{}, jsonList("{", `"#":""`, "}", fill(`"":""`))},
		"JSON nulls":       {broker.JSON{}, jsonList("{", `"#":null`, "}", fill(`"":null`))},
		"JSON escapes":     {broker.JSON{}, jsonList("{", `"\u0041#":"\n"`, "}", fill(`"\u0041":"\n"`))},
		"JSON numbers":     {broker.JSON{}, jsonList("{", `"#":1`, "}", fill(`"":1`))},
		"JSON empty maps":  {broker.JSON{}, jsonList("{", `"#":{}`, "}", fill(`"":{}`))},
		"JSON nested list": {broker.JSON{}, []byte(`{"a":` + string(jsonList("[", "{}", "]", hostileSize/3-4)) + `}`)},
		"MsgPack strings":  {broker.MsgPack{}, msgpackMap(200_000, bytes.Repeat([]byte{0xa1, 'k', 0xa0}, 200_000))},
		"MsgPack nil":      {broker.MsgPack{}, msgpackMap(200_000, bytes.Repeat([]byte{0xa1, 'k', 0xc0}, 200_000))},
		"MsgPack maps":     {broker.MsgPack{}, msgpackMap(200_000, bytes.Repeat([]byte{0xa1, 'k', 0x80}, 200_000))},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if len(c.in) > broker.MaxHeadersSize {
				// The count must refuse it, not the size.
				t.Fatalf("test input of %d bytes, over MaxHeadersSize", len(c.in))
			}
			var err error
			alloc := allocatedBy(func() { _, err = broker.DecodeHeaders(c.ser, c.in) })
			perByte := float64(alloc) / float64(len(c.in))
			t.Logf("%d bytes in, %d allocated (%.2f per byte): %v", len(c.in), alloc, perByte, err)
			if err == nil {
				t.Errorf("decoded without error")
			}
			if perByte > 1 {
				t.Errorf("%.2f bytes allocated per hostile byte, want < 1", perByte)
			}
		})
	}
}

// TestAllocationWithinBudget: input at the entry budget decodes, at a
// bounded cost per byte: the worst shapes the budget lets through (the
// smallest maps and arrays it allows, arrays of one-byte scalars).
func TestAllocationWithinBudget(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(256 << 20))
	n := hostileSize
	pad := func(k int) string { return strings.Repeat("x", k) }
	anyT := func() any { return new(any) }
	cases := []hostileCase{
		// Each item has BytesPerEntry bytes per value it counts for.
		// JSON: an object counts "{", ":" and "," (3 values), a number its ",".
		{"JSON one-member objects", broker.JSON{}, jsonList("[", `{"`+pad(17)+`":1}`, "]", n/25), anyT},
		{"JSON empty objects", broker.JSON{}, jsonList("[", `{}`+strings.Repeat(" ", 14), "]", n/17), anyT},
		{"JSON numbers", broker.JSON{}, jsonList("[", "12345678", "]", n/9), anyT},
		// MessagePack: a map with one entry is 3 values.
		{"MsgPack one-entry maps", broker.MsgPack{}, msgpackArray(n/25, bytes.Repeat(append([]byte{0x81, 0xb6}, append([]byte(pad(22)), 0x01)...), n/25)), anyT},
		{"MsgPack empty maps", broker.MsgPack{}, msgpackArray(n/17*2, bytes.Repeat(append([]byte{0x80, 0xaf}, pad(15)...), n/17)), anyT},
		{"MsgPack nils", broker.MsgPack{}, msgpackArray(n/17*2, bytes.Repeat(append([]byte{0xc0, 0xaf}, pad(15)...), n/17)), anyT},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			alloc := allocatedBy(func() { err = c.ser.Unmarshal(c.in, c.target()) })
			perByte := float64(alloc) / float64(max(len(c.in), 1))
			t.Logf("%d bytes in, %d allocated (%.2f per byte): %v", len(c.in), alloc, perByte, err)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if perByte > 24 {
				t.Errorf("%.2f bytes allocated per byte, want at most 24", perByte)
			}
		})
	}
}
