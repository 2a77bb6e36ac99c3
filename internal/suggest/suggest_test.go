package suggest

import "testing"

func TestDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"kafka", "kafka", 0}, {"kafak", "kafka", 1}, {"ab", "ba", 1}, {"abc", "ca", 3}, {"", "abc", 3},
		{"SendToChanel", "SendToChannel", 1}, {"redis", "rediss", 1}, {"nats", "amqp", 4},
	} {
		if got := Distance(tt.a, tt.b); got != tt.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestClosest(t *testing.T) {
	known := []string{"amqp", "kafka", "memory", "nats", "redis", "rediss"}
	for _, tt := range []struct{ name, want string }{
		{"kafak", "kafka"}, {"KAFKA", "kafka"}, {"redsi", "redis"}, {"nast", "nats"}, {"sant", ""}, {"nat", "nats"},
		{"mqtt", ""}, {"http", ""}, {"memroy", "memory"}, {"kafka", ""},
	} {
		if got := Closest(tt.name, known); got != tt.want {
			t.Errorf("Closest(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}
