package broker

import "testing"

type benchOrder struct {
	ID       int               `json:"id"`
	Customer string            `json:"customer"`
	Amount   float64           `json:"amount"`
	Tags     []string          `json:"tags"`
	Attrs    map[string]string `json:"attrs"`
}

var benchPayload = benchOrder{ID: 42, Customer: "ACME Corp", Amount: 99.95,
	Tags: []string{"new", "priority"}, Attrs: map[string]string{"region": "eu", "channel": "web"}}

var benchHeaders = map[string]string{"$requestID": "node-1-abc", "$level": "1", "$caller": "v2.orders", "k": "v"}

func benchUnmarshal(b *testing.B, s Serializer, fresh func() any) {
	data, err := s.Marshal(benchPayload)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Unmarshal(data, fresh()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSerializer encodes the small struct benchPayload, and decodes it
// into the struct, into an interface and into a map.
func BenchmarkSerializer(b *testing.B) {
	for _, s := range []Serializer{JSON{}, MsgPack{}} {
		b.Run(s.Name()+"/Marshal/struct", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Marshal(benchPayload); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(s.Name()+"/Unmarshal/struct", func(b *testing.B) { benchUnmarshal(b, s, func() any { return new(benchOrder) }) })
		b.Run(s.Name()+"/Unmarshal/any", func(b *testing.B) { benchUnmarshal(b, s, func() any { return new(any) }) })
		b.Run(s.Name()+"/Unmarshal/map", func(b *testing.B) { benchUnmarshal(b, s, func() any { return new(map[string]any) }) })
	}
}
