package broker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// Serializer turns payloads into bytes and back. Moleculer services must use
// the same serializer on the same channel.
//
// Unmarshal receives untrusted bytes from the broker: the serializers of this
// package bound what they decode (see MaxDepth), and a custom Serializer
// should do the same.
type Serializer interface {
	Name() string
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default serializer, identical on the wire to moleculer's JSON
// serializer.
type JSON struct{}

// Name returns "JSON".
func (JSON) Name() string { return "JSON" }

// Marshal encodes v as JSON.
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes JSON into v with encoding/json, after checking that the
// nesting is at most MaxDepth and the entries at most EntryBudget(len(data))
// (a *MalformedError otherwise).
func (JSON) Unmarshal(data []byte, v any) error { return unmarshalJSON(data, v, 0) }

// unmarshalJSON is JSON.Unmarshal with a bound of its own on the entries of
// the top-level value (maxTop > 0).
func unmarshalJSON(data []byte, v any, maxTop int) error {
	if err := scanJSON(data, maxTop); err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// MsgPack encodes with MessagePack (moleculer's "MsgPack" serializer).
type MsgPack struct{}

// Name returns "MsgPack".
func (MsgPack) Name() string { return "MsgPack" }

// Marshal encodes v with MessagePack, using json struct tags as field names.
func (MsgPack) Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetCustomStructTag("json")
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Unmarshal decodes MessagePack into v, using json struct tags as field
// names. The input is checked before it is decoded, without allocating: it
// must be exactly one value, every declared length must fit in the bytes
// that follow it, nesting is at most MaxDepth and the entries (arrays, maps
// and map entries) at most EntryBudget(len(data)); a rejected input is a
// *MalformedError (errors.Is ErrMalformed). Extension data is never decoded
// as MessagePack (the library would, where a map is expected). Maps decoded
// into an interface are map[any]any, with binary keys turned into strings; a
// panic of the library is returned as an error.
func (MsgPack) Unmarshal(data []byte, v any) error { return unmarshalMsgPack(data, v, 0) }

// unmarshalMsgPack is MsgPack.Unmarshal with a bound of its own on the
// entries of the top-level value (maxTop > 0).
func unmarshalMsgPack(data []byte, v any, maxTop int) (err error) {
	traps, err := scanMsgPackTop(data, maxTop)
	if err != nil {
		return err
	}
	st := msgpackPool.Get().(*msgpackState)
	var r io.Reader
	if traps == nil {
		st.rd.Reset(data)
		r = &st.rd
	} else {
		r = &trapReader{b: data, traps: traps}
	}
	dec := st.dec
	dec.Reset(r)
	dec.SetCustomStructTag("json")
	dec.SetMapDecoder(decodeUntypedMap)
	defer func() {
		if p := recover(); p != nil {
			// The decoder may be in any state: leave it to the GC.
			err = fmt.Errorf("msgpack: decoder panic: %v", p)
			return
		}
		dec.Reset(nil)
		st.rd.Reset(nil)
		msgpackPool.Put(st)
	}()
	return dec.Decode(v)
}

// msgpackState is a pooled decoder with its reader.
type msgpackState struct {
	dec *msgpack.Decoder
	rd  bytes.Reader
}

var msgpackPool = sync.Pool{New: func() any { return &msgpackState{dec: msgpack.NewDecoder(nil)} }}

// decodeUntypedMap decodes a map met while decoding into an interface, as
// the library's DecodeUntypedMap does, except that binary keys become
// strings and keys that cannot be map keys (arrays, maps) are an error
// instead of a panic. The scan bounded the declared length.
func decodeUntypedMap(d *msgpack.Decoder) (any, error) {
	n, err := d.DecodeMapLen()
	if err != nil || n == -1 {
		return nil, err
	}
	m := make(map[any]any, n)
	for i := 0; i < n; i++ {
		k, err := d.DecodeInterface()
		if err != nil {
			return nil, err
		}
		switch x := k.(type) {
		case []byte:
			k = string(x)
		case []any, map[any]any:
			return nil, fmt.Errorf("msgpack: a map key cannot be a %T", k)
		}
		v, err := d.DecodeInterface()
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, nil
}

// Raw passes bytes through: Marshal takes []byte or string, Unmarshal fills
// a *[]byte or *string.
type Raw struct{}

// Name returns "Raw".
func (Raw) Name() string { return "Raw" }

// Marshal accepts []byte and string.
func (Raw) Marshal(v any) ([]byte, error) { return RawBytes(v) }

// Unmarshal copies data into *[]byte or *string.
func (Raw) Unmarshal(data []byte, v any) error {
	switch p := v.(type) {
	case *[]byte:
		*p = append((*p)[:0], data...)
	case *string:
		*p = string(data)
	default:
		return fmt.Errorf("raw serializer cannot decode into %T", v)
	}
	return nil
}

// RawBytes returns the bytes of a []byte or string payload.
func RawBytes(v any) ([]byte, error) {
	switch b := v.(type) {
	case []byte:
		return b, nil
	case string:
		return []byte(b), nil
	case nil:
		return nil, nil
	default:
		return nil, fmt.Errorf("raw payload must be []byte or string, got %T", v)
	}
}

// UnmarshalMap decodes a map of untrusted data (a $meta, a headers object)
// of at most maxEntries top-level entries: with JSON and MsgPack the entries
// are counted before anything is decoded (with the bounds of their
// Unmarshal), with another serializer after its Unmarshal, which must bound
// itself. A null or nil input gives a nil map.
func UnmarshalMap(ser Serializer, data []byte, maxEntries int) (map[string]any, error) {
	var m map[string]any
	var err error
	switch ser.(type) {
	case JSON, *JSON:
		err = unmarshalJSON(data, &m, maxEntries)
	case MsgPack, *MsgPack:
		err = unmarshalMsgPack(data, &m, maxEntries)
	default:
		err = ser.Unmarshal(data, &m)
		if err == nil && len(m) > maxEntries {
			err = malformed(ser.Name(), -1, "%d entries at top level, more than %d", len(m), maxEntries)
		}
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// unmarshalTop is hs.Unmarshal (hs is JSON or MsgPack) with at most maxTop
// entries at top level.
func unmarshalTop(hs Serializer, data []byte, v any, maxTop int) error {
	if _, ok := hs.(MsgPack); ok {
		return unmarshalMsgPack(data, v, maxTop)
	}
	return unmarshalJSON(data, v, maxTop)
}

// SerializerByName resolves "JSON", "MsgPack" or "Raw" (case-insensitive).
func SerializerByName(name string) (Serializer, error) {
	switch strings.ToLower(name) {
	case "", "json":
		return JSON{}, nil
	case "msgpack":
		return MsgPack{}, nil
	case "raw":
		return Raw{}, nil
	}
	return nil, fmt.Errorf("%w: unknown serializer %q", ErrInvalidOption, name)
}
