package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
)

// Bounds of the decoders of wire data.
//
// Every byte a broker hands over is untrusted: any producer can write to a
// channel. JSON.Unmarshal, MsgPack.Unmarshal and DecodeHeaders (and so the
// payload, the headers field and $meta of every message) check their input
// before the underlying library allocates anything for it:
//
//   - MessagePack is walked once, without allocating, before it is decoded:
//     every declared length (string, binary, extension, array, map) must fit
//     in the bytes actually left, so what the decoder preallocates is bounded
//     by the size of the input; nesting is at most MaxDepth; the input is
//     exactly one value (no trailing bytes).
//   - JSON: encoding/json validates the whole input before decoding; the
//     pre-scan limits nesting to MaxDepth (encoding/json alone allows
//     10,000 levels).
//   - Both: the values (every array, map, element, map key and value, at
//     any depth) are counted in the same pass, and an input holding more
//     than EntryBudget(len(input)) of them is refused before the decoder
//     runs. Small values are what costs memory out of proportion to the
//     input: an empty map is one MessagePack byte and some 48 bytes once
//     decoded, a one-entry map several hundred, a JSON "0," a 16-byte
//     interface, a boxed float64 and its share of a growing slice; 1 MiB of
//     empty MessagePack maps was 64 MiB decoded, 1 MiB of JSON `[{},...]` (or
//     `[0,...]`) 43 MiB. Within the budget a decoded value costs at most a
//     few tens of bytes per input byte (TestAllocationWithinBudget), and a
//     refusal allocates nothing but the error (TestHostileAllocationPerByte).
//
// Why a pre-scan rather than options of the libraries: vmihailenco/msgpack
// has no limit on the values of a decode, only caps on what it preallocates
// for one declared length (a million elements or map entries:
// DisableAllocLimit), and encoding/json has no limit at all; a json.Decoder
// counting tokens allocates an interface value per token, which is the cost
// to avoid. One pass over the bytes, allocation-free, checks every bound
// before the library runs.
//
// Size limits on whole messages are the plugin's (WithMaxPayloadSize,
// WithMaxMetaSize), MaxHeadersSize and the broker's.
const (
	// MaxDepth is the deepest nesting of arrays and maps (JSON objects) that
	// the decoders accept: a scalar at top level has depth 0, [[1]] depth 2.
	// It keeps recursive code run later on a decoded value (printing,
	// re-encoding, comparing) far from Go's stack limit.
	MaxDepth = 100

	// MaxEntriesFloor and BytesPerEntry make the entry budget of a decode
	// (see EntryBudget).
	MaxEntriesFloor = 8192
	BytesPerEntry   = 8
)

// EntryBudget is the largest number of values (arrays, maps, their elements,
// map keys and values, at any depth) that JSON.Unmarshal and
// MsgPack.Unmarshal accept in an input of n bytes: MaxEntriesFloor, or one
// value per BytesPerEntry bytes of input when that is more. A 1 MiB payload
// may hold 131,072 values (a list of 40,000 one-field records, of 100,000
// numbers), which decode into some 20 MiB at most. JSON is counted by its
// separators (an object member counts twice), so a JSON value is a little
// more expensive than a MessagePack one.
func EntryBudget(n int) int { return max(MaxEntriesFloor, n/BytesPerEntry) }

// ErrMalformed is wrapped by every *MalformedError: input rejected by the
// bounds checks of the decoders (truncated data, a declared length larger
// than the data, nesting deeper than MaxDepth, a headers field over its
// limits). Decoding failures reported by the libraries themselves (a type
// mismatch, invalid UTF-8 in JSON, ...) do not wrap it.
var ErrMalformed = errors.New("channels: malformed or oversized encoded data")

// MalformedError reports encoded data rejected before it was decoded.
type MalformedError struct {
	// Format is "MsgPack", "JSON" or "headers".
	Format string
	// Offset is the byte offset of the item at fault (-1 when it concerns the
	// whole input).
	Offset int
	// Reason says what is wrong, with the numbers involved.
	Reason string
}

func (e *MalformedError) Error() string {
	if e.Offset < 0 {
		return e.Format + ": " + e.Reason
	}
	return fmt.Sprintf("%s: %s (at byte %d)", e.Format, e.Reason, e.Offset)
}

// Unwrap returns ErrMalformed.
func (e *MalformedError) Unwrap() error { return ErrMalformed }

func malformed(format string, off int, f string, args ...any) *MalformedError {
	return &MalformedError{Format: format, Offset: off, Reason: fmt.Sprintf(f, args...)}
}

// MessagePack format bytes (https://github.com/msgpack/msgpack/blob/master/spec.md).
const (
	mpNil      = 0xc0
	mpNever    = 0xc1
	mpBin8     = 0xc4
	mpBin16    = 0xc5
	mpBin32    = 0xc6
	mpExt8     = 0xc7
	mpExt16    = 0xc8
	mpExt32    = 0xc9
	mpFixExt1  = 0xd4
	mpFixExt16 = 0xd8
	mpStr8     = 0xd9
	mpStr16    = 0xda
	mpStr32    = 0xdb
	mpArray16  = 0xdc
	mpArray32  = 0xdd
	mpMap16    = 0xde
	mpMap32    = 0xdf
)

// mpFixedSize is the number of bytes that follow the format byte of the
// fixed-size formats (nil, bool, numbers, fixext: type byte included).
var mpFixedSize = [256]int8{
	0xc0: 0, 0xc2: 0, 0xc3: 0, // nil, false, true
	0xca: 4, 0xcb: 8, // float 32, 64
	0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, // uint 8..64
	0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8, // int 8..64
	0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17, // fixext 1..16 (type + data)
}

func isMapCode(c byte) bool { return (c >= 0x80 && c <= 0x8f) || c == mpMap16 || c == mpMap32 }

// scanMsgPack checks that b holds exactly one MessagePack value whose
// declared lengths all fit in b and whose nesting is at most MaxDepth. It
// walks the format bytes once and allocates nothing, except in the rare
// case it returns traps: the offsets of extension data that begin like a map.
//
// The traps exist because vmihailenco/msgpack, when a map is expected (a map
// or struct target) and it meets an extension, skips the extension header
// and decodes the extension's data as the map: a timestamp whose bytes read
// as a map header declaring 4 billion entries would bypass every check made
// here. The decoder's reader refuses to read a format byte at a trap.
func scanMsgPack(b []byte) (traps []int, err error) { return scanMsgPackTop(b, 0) }

// scanMsgPackTop is scanMsgPack that also refuses a top-level map or array
// of more than maxTop entries (0: no bound of its own).
func scanMsgPackTop(b []byte, maxTop int) (traps []int, err error) {
	const format = "MsgPack"
	if len(b) == 0 {
		return nil, malformed(format, -1, "empty input")
	}
	if uint64(len(b)) > math.MaxUint32 {
		return nil, malformed(format, -1, "%d bytes, more than 4 GiB", len(b))
	}
	// stack[i] holds the items still expected by the container open at
	// depth i+1 while a deeper one is being read (fewer than len(b)).
	var stack [MaxDepth]uint32
	depth := 0
	left := uint64(1) // items still expected at the current depth
	pos := 0
	n := len(b)
	budget := uint64(EntryBudget(n))
	var entries uint64
	for {
		for left == 0 {
			if depth == 0 {
				if pos != n {
					return nil, malformed(format, pos, "%d trailing bytes after the value", n-pos)
				}
				return traps, nil
			}
			depth--
			left = uint64(stack[depth])
		}
		if pos >= n {
			return nil, malformed(format, pos, "input ends where a value is expected")
		}
		start := pos
		c := b[pos]
		pos++
		left--
		if entries++; entries > budget {
			return nil, malformed(format, start, "more than %d values in %d bytes", budget, n)
		}
		var length uint64 // bytes of data (str, bin, ext) after the header
		var items uint64  // items of a container
		container := false
		switch {
		case c <= 0x7f || c >= 0xe0: // positive / negative fixint
			continue
		case c <= 0x8f: // fixmap
			items, container = 2*uint64(c&0x0f), true
		case c <= 0x9f: // fixarray
			items, container = uint64(c&0x0f), true
		case c <= 0xbf: // fixstr
			length = uint64(c & 0x1f)
		case c == mpNever:
			return nil, malformed(format, start, "format byte 0xc1 is never used")
		case c >= mpBin8 && c <= mpBin32, c >= mpStr8 && c <= mpStr32,
			c >= mpExt8 && c <= mpExt32, c >= mpArray16 && c <= mpMap32:
			var size int // bytes of the length field
			switch c {
			case mpBin8, mpStr8, mpExt8:
				size = 1
			case mpBin16, mpStr16, mpExt16, mpArray16, mpMap16:
				size = 2
			default:
				size = 4
			}
			if n-pos < size {
				return nil, malformed(format, start, "input ends inside a length field")
			}
			var v uint64
			for _, x := range b[pos : pos+size] {
				v = v<<8 | uint64(x)
			}
			pos += size
			switch c {
			case mpArray16, mpArray32:
				items, container = v, true
			case mpMap16, mpMap32:
				items, container = 2*v, true
			case mpExt8, mpExt16, mpExt32:
				if pos >= n {
					return nil, malformed(format, start, "input ends before the extension type")
				}
				pos++ // type
				if v == 0 {
					// Nothing would tell the decoder's reads of the next
					// item from a map decoded "inside" this extension.
					return nil, malformed(format, start, "extension with no data is not supported")
				}
				length = v
			default:
				length = v
			}
		default: // nil, bool, numbers, fixext
			size := int(mpFixedSize[c])
			if n-pos < size {
				return nil, malformed(format, start, "input ends inside a %d-byte value", size)
			}
			if c >= mpFixExt1 && c <= mpFixExt16 && isMapCode(b[pos+1]) {
				traps = append(traps, pos+1)
			}
			pos += size
			continue
		}
		rest := uint64(n - pos)
		if container {
			if items > rest {
				what, count := "array", items
				if isMapCode(c) {
					what, count = "map", items/2
				}
				return nil, malformed(format, start, "%s declares %d entries, more than the %d bytes left can hold", what, count, rest)
			}
			if depth >= MaxDepth {
				return nil, malformed(format, start, "nesting deeper than %d", MaxDepth)
			}
			top := items
			if isMapCode(c) {
				top = items / 2
			}
			if depth == 0 && maxTop > 0 && top > uint64(maxTop) {
				return nil, malformed(format, start, "%d entries at top level, more than %d", top, maxTop)
			}
			if items > 0 {
				stack[depth] = uint32(left)
				depth++
				left = items
			}
			continue
		}
		if length > rest {
			return nil, malformed(format, start, "declared length %d exceeds the %d bytes left", length, rest)
		}
		if c >= mpExt8 && c <= mpExt32 && isMapCode(b[pos]) {
			traps = append(traps, pos)
		}
		pos += int(length)
	}
}

// scanJSON checks that JSON nesting is at most MaxDepth and that the input
// holds at most EntryBudget(len(b)) entries (arrays, objects and object
// members, at any depth), and, when maxTop > 0, at most maxTop entries in the
// top-level array or object. It counts brackets, colons and commas outside
// strings in one pass that allocates nothing; encoding/json validates the
// rest. The pass is skipped when counts over the whole input (strings
// included) already show the bounds hold: always for input of at most
// 2*MaxDepth bytes, or with few brackets, colons and commas.
func scanJSON(b []byte, maxTop int) error {
	n := len(b)
	budget := EntryBudget(n)
	brackets := -1
	if n > 2*MaxDepth {
		brackets = bytes.Count(b, []byte{'['}) + bytes.Count(b, []byte{'{'})
	}
	deep := brackets > MaxDepth
	commas := -1
	if n > budget || (maxTop > 0 && n > maxTop) {
		commas = bytes.Count(b, []byte{','})
	}
	many := n > budget && brackets+commas+bytes.Count(b, []byte{':'}) > budget
	wide := maxTop > 0 && n > maxTop && commas >= maxTop
	if !deep && !many && !wide {
		return nil
	}
	depth, entries, top := 0, 0, 0
	inString := false
	for i := 0; i < n; i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
			if depth > MaxDepth {
				return malformed("JSON", i, "nesting deeper than %d", MaxDepth)
			}
			if depth == 1 {
				top = 1
			}
			entries++
		case ':':
			entries++
		case ',':
			if depth == 1 {
				top++
				if maxTop > 0 && top > maxTop {
					return malformed("JSON", i, "more than %d entries at top level", maxTop)
				}
			}
			entries++
		case ']', '}':
			depth--
			continue
		default:
			continue
		}
		if entries > budget {
			return malformed("JSON", i, "more than %d values in %d bytes", budget, n)
		}
	}
	return nil
}

// trapReader is the reader of a MessagePack decode whose input has traps
// (see scanMsgPack): it fails when a format byte is read at one of them. The
// library reads format bytes one at a time (ReadByte) and data with Read, so
// extension data decoded the regular way never hits a trap.
type trapReader struct {
	b     []byte
	i     int
	traps []int // ascending
	k     int   // traps[:k] are behind i
}

var errExtAsMap = &MalformedError{Format: "MsgPack", Offset: -1,
	Reason: "extension data decoded as a map (an extension where a map is expected)"}

func (r *trapReader) ReadByte() (byte, error) {
	for r.k < len(r.traps) && r.traps[r.k] < r.i {
		r.k++
	}
	if r.i >= len(r.b) {
		return 0, io.EOF
	}
	if r.k < len(r.traps) && r.traps[r.k] == r.i {
		e := *errExtAsMap
		e.Offset = r.i
		return 0, &e
	}
	c := r.b[r.i]
	r.i++
	return c, nil
}

func (r *trapReader) UnreadByte() error {
	if r.i == 0 {
		return errors.New("trapReader.UnreadByte: at beginning")
	}
	r.i--
	for r.k > 0 && r.traps[r.k-1] >= r.i {
		r.k--
	}
	return nil
}

func (r *trapReader) Read(p []byte) (int, error) {
	if r.i >= len(r.b) {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := copy(p, r.b[r.i:])
	r.i += n
	return n, nil
}
