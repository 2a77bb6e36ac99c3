package kit_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"
)

type innerOpts struct {
	N       int
	Configs map[string]string
}

type overlayOpts struct {
	Name      string
	Wait      time.Duration
	On        bool
	Durable   *bool
	Subjects  []string
	Configure func() string
	Inner     innerOpts
	Since     time.Time
	hidden    int
}

func TestOverlay(t *testing.T) {
	no, yes := false, true
	base := overlayOpts{Name: "base", Wait: time.Second, On: true, Durable: &yes, Subjects: []string{"a"},
		Inner: innerOpts{N: 1, Configs: map[string]string{"k": "base", "only-base": "1"}}, hidden: 7}
	over := overlayOpts{Wait: 2 * time.Second, Durable: &no, Subjects: []string{},
		Since: time.Unix(42, 0), Configure: func() string { return "over" }, Inner: innerOpts{Configs: map[string]string{"k": "over"}}, hidden: 9}
	got := kit.Overlay(base, over)
	switch {
	case got.Name != "base", got.Wait != 2*time.Second, !got.On, got.Durable != &no:
		t.Fatalf("scalars: %+v", got)
	case got.Subjects == nil || len(got.Subjects) != 0:
		t.Fatalf("a non-nil empty slice did not replace base's: %v", got.Subjects)
	case got.Configure == nil || got.Configure() != "over":
		t.Fatal("func not laid over")
	case got.Inner.N != 1 || !reflect.DeepEqual(got.Inner.Configs, map[string]string{"k": "over", "only-base": "1"}):
		t.Fatalf("nested: %+v", got.Inner)
	case !got.Since.Equal(time.Unix(42, 0)):
		t.Fatalf("a time.Time not laid over: %v", got.Since)
	case got.hidden != 7:
		t.Fatalf("unexported field taken from over: %d", got.hidden)
	}
	if base.Inner.Configs["k"] != "base" {
		t.Fatal("base's map was written to")
	}
	if got := kit.Overlay(base, overlayOpts{}); !reflect.DeepEqual(got.Inner, base.Inner) || got.Name != "base" {
		t.Fatalf("a zero overlay changed base: %+v", got)
	}
}
