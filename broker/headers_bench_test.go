package broker

import (
	"fmt"
	"testing"
)

// decodeHeadersInline is how the Redis adapter decoded headers before
// DecodeHeaders: the serializer into map[string]any, then the values.
func decodeHeadersInline(ser Serializer, b []byte) (map[string]string, error) {
	var h map[string]any
	if err := ser.Unmarshal(b, &h); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		switch x := v.(type) {
		case string:
			out[k] = x
		case nil:
		default:
			out[k] = fmt.Sprint(x)
		}
	}
	return out, nil
}

// BenchmarkHeaders encodes and decodes the headers of a message sent from a
// handler (the context headers and one user header).
func BenchmarkHeaders(b *testing.B) {
	h := map[string]string{"$requestID": "node-1-abc", "$parentID": "node-2-7", "$level": "1",
		"$caller": "v2.orders", "$parentChannelName": "order.created", "$meta": "eyJ0ZW5hbnQiOiJhY21lIn0=", "k": "v"}
	for _, s := range []Serializer{JSON{}, MsgPack{}} {
		enc, _ := s.Marshal(h)
		b.Run(s.Name()+"/EncodeHeaders", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := EncodeHeaders(s, h); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(s.Name()+"/inline", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeHeadersInline(s, enc); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(s.Name()+"/DecodeHeaders", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeHeaders(s, enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
