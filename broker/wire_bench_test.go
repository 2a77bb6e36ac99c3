package broker

import (
	"strings"
	"testing"
)

// The cost of the bounds checks alone, on the payload of BenchmarkUnmarshal
// and on a 4 KiB one.
func BenchmarkScan(b *testing.B) {
	type order struct {
		ID       int               `json:"id"`
		Customer string            `json:"customer"`
		Amount   float64           `json:"amount"`
		Tags     []string          `json:"tags"`
		Attrs    map[string]string `json:"attrs"`
	}
	small := order{ID: 42, Customer: "ACME Corp", Amount: 99.95,
		Tags: []string{"new", "priority"}, Attrs: map[string]string{"region": "eu", "channel": "web"}}
	large := small
	for i := range 100 {
		large.Tags = append(large.Tags, strings.Repeat("t", i%40))
	}
	for _, c := range []struct {
		name string
		v    order
	}{{"small", small}, {"4KiB", large}} {
		mp, _ := MsgPack{}.Marshal(c.v)
		js, _ := JSON{}.Marshal(c.v)
		b.Run("MsgPack/"+c.name, func(b *testing.B) {
			b.SetBytes(int64(len(mp)))
			for b.Loop() {
				if _, err := scanMsgPack(mp); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("JSON/"+c.name, func(b *testing.B) {
			b.SetBytes(int64(len(js)))
			for b.Loop() {
				if err := scanJSON(js, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
