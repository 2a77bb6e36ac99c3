package broker

import (
	"bytes"
	"fmt"
)

// Limits of a message's headers, checked by EncodeHeaders (so a sender
// learns at once) and DecodeHeaders (so a hostile producer cannot make a
// consumer allocate without bound).
const (
	// MaxHeaders is the largest number of headers of one message.
	MaxHeaders = 1024
	// MaxHeadersSize is the largest encoded headers field, in bytes. It
	// leaves room for the context headers ($meta is base64 of the serialized
	// meta) and dead-letter headers (x-error-stack is base64 of the stack).
	MaxHeadersSize = 1 << 20
)

// HeadersSerializer returns the serializer that encodes the headers of
// messages sent with ser: ser itself when it is JSON or MsgPack (as
// @moleculer/channels serializes the headers object with the broker's
// serializer), JSON for any other serializer. Raw cannot encode a map, and
// a custom serializer is not trusted to decode untrusted headers within
// bounds, so both get JSON, on which every Go and Node member agrees.
func HeadersSerializer(ser Serializer) Serializer {
	switch ser.(type) {
	case MsgPack, *MsgPack:
		return MsgPack{}
	}
	return JSON{}
}

// EncodeHeaders encodes h for an adapter whose wire has a headers field
// (Redis), with HeadersSerializer(ser). Callers may leave the field out when
// h is empty. More than MaxHeaders headers, or an encoding over
// MaxHeadersSize bytes, is an error: the consumers would refuse it.
func EncodeHeaders(ser Serializer, h map[string]string) ([]byte, error) {
	if len(h) > MaxHeaders {
		return nil, fmt.Errorf("%d headers, more than MaxHeaders (%d)", len(h), MaxHeaders)
	}
	hs := HeadersSerializer(ser)
	if _, ok := hs.(JSON); ok {
		if b, ok := encodePlainJSON(h); ok {
			return b, nil
		}
	}
	if h == nil {
		h = map[string]string{}
	}
	b, err := hs.Marshal(h)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxHeadersSize {
		return nil, fmt.Errorf("encoded headers are %d bytes, more than MaxHeadersSize (%d)", len(b), MaxHeadersSize)
	}
	return b, nil
}

// DecodeHeaders decodes a headers field written by EncodeHeaders or by
// @moleculer/channels, with HeadersSerializer(ser). The input is bounded:
// at most MaxHeadersSize bytes and MaxHeaders entries (counted before they
// are decoded), and the bounds of the
// serializers (MaxDepth and declared lengths). The top level must be a map
// (or null/nil: no headers) with string keys. Values: strings are kept, nil
// values skipped, binary values taken as strings, numbers, booleans and
// timestamps formatted with fmt (JSON numbers are float64: 3 gives "3",
// 1e21 "1e+21"), and nested arrays and maps rendered with fmt too (their
// nesting is bounded by MaxDepth). Errors from the bounds are
// *MalformedError.
func DecodeHeaders(ser Serializer, b []byte) (map[string]string, error) {
	if len(b) > 4096 && (bytes.Count(b, []byte{'"'}) > 4*MaxHeaders+4 || bytes.IndexByte(b, '[') >= 0 ||
		bytes.IndexByte(b, '\\') >= 0 || bytes.Count(b, []byte{'{'}) > 1) {
		// A large field the plain path (decodePlainJSON) would refuse,
		// for too many strings, a nested value or an escape: it is not
		// copied into a string for it.
		return decodeHeaders(ser, b)
	}
	if h, ok := decodePlain(ser, len(b), func() string { return string(b) }); ok {
		return h, nil
	}
	return decodeHeaders(ser, b)
}

// DecodeHeadersString is DecodeHeaders of a headers field that the client
// library hands over as a string (go-redis): plain JSON headers are
// substrings of s, with no copy.
func DecodeHeadersString(ser Serializer, s string) (map[string]string, error) {
	if h, ok := decodePlain(ser, len(s), func() string { return s }); ok {
		return h, nil
	}
	return decodeHeaders(ser, []byte(s))
}

// decodePlain is the fast path of DecodeHeaders (decodePlainJSON) for a
// field of n bytes, when its serializer is JSON.
func decodePlain(ser Serializer, n int, field func() string) (map[string]string, bool) {
	if n == 0 || n > MaxHeadersSize {
		return nil, false
	}
	if _, ok := HeadersSerializer(ser).(JSON); !ok {
		return nil, false
	}
	return decodePlainJSON(field())
}

func decodeHeaders(ser Serializer, b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, &MalformedError{Format: "headers", Offset: -1, Reason: "empty headers field"}
	}
	if len(b) > MaxHeadersSize {
		return nil, malformed("headers", -1, "%d bytes, more than MaxHeadersSize (%d)", len(b), MaxHeadersSize)
	}
	hs := HeadersSerializer(ser)
	if h, ok := decodeStringHeaders(hs, b); ok {
		if len(h) > MaxHeaders {
			return nil, tooManyHeaders(len(h))
		}
		return h, nil
	}
	return decodeAnyHeaders(hs, b)
}

// decodeStringHeaders is the common case of DecodeHeaders: a map whose
// values are all strings (or MessagePack binaries), decoded straight into a
// map[string]string instead of through map[string]any (which costs an
// allocation per value). Its result is the one of decodeAnyHeaders for the
// same input. ok is false when the input may hold anything else (a value
// that is not a string, a nil, a top level that is not a map, a malformed
// input): decodeAnyHeaders then decodes it, and reports the errors.
func decodeStringHeaders(hs Serializer, b []byte) (h map[string]string, ok bool) {
	switch hs.(type) {
	case JSON:
		// A nil value would become "" instead of being skipped. Looking
		// for the word anywhere (in a string too) is enough: the general
		// path decodes the rare header that contains it.
		if bytes.Contains(b, []byte("null")) {
			return nil, false
		}
	case MsgPack:
		// The nil code would become "": the same reasoning, for the byte.
		if bytes.IndexByte(b, 0xc0) >= 0 {
			return nil, false
		}
	default:
		return nil, false
	}
	if err := unmarshalTop(hs, b, &h, MaxHeaders); err != nil || h == nil {
		return nil, false
	}
	return h, true
}

// decodeAnyHeaders decodes any headers field DecodeHeaders accepts.
func decodeAnyHeaders(hs Serializer, b []byte) (map[string]string, error) {
	// The entries are counted before they are decoded: a 1 MiB field of
	// small entries decoded whole before being refused allocated 40 MiB.
	var m map[string]any
	if err := unmarshalTop(hs, b, &m, MaxHeaders); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, nil
	}
	if len(m) > MaxHeaders {
		return nil, tooManyHeaders(len(m))
	}
	h := make(map[string]string, len(m))
	for k, x := range m {
		if s, ok := headerValue(x); ok {
			h[k] = s
		}
	}
	return h, nil
}

func tooManyHeaders(n int) error {
	return malformed("headers", -1, "%d headers, more than MaxHeaders (%d)", n, MaxHeaders)
}

// headerValue renders one decoded header value; ok is false for nil.
func headerValue(v any) (s string, ok bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case nil:
		return "", false
	case []byte:
		return string(x), true
	default:
		// Numbers, booleans, timestamps, and arrays and maps no deeper
		// than MaxDepth.
		return fmt.Sprint(x), true
	}
}
