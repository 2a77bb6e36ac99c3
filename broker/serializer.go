package broker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
)

// Serializer turns payloads into bytes and back. Moleculer services must use
// the same serializer on the same channel.
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

// Unmarshal decodes JSON into v.
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

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

// Unmarshal decodes MessagePack into v.
func (MsgPack) Unmarshal(data []byte, v any) error {
	dec := msgpack.NewDecoder(bytes.NewReader(data))
	dec.SetCustomStructTag("json")
	dec.SetMapDecoder(func(d *msgpack.Decoder) (any, error) { return d.DecodeUntypedMap() })
	return dec.Decode(v)
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
