package kit_test

import (
	"context"
	"errors"
	"testing"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels/broker"
)

func TestLifecycle(t *testing.T) {
	var l kit.Lifecycle[string]
	if _, err := l.Current(); !errors.Is(err, broker.ErrNotConnected) {
		t.Fatalf("before Connect: %v", err)
	}
	boom := errors.New("refused")
	if err := l.Connect(broker.Env{}, func() (*string, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("failed dial: %v", err)
	}
	dials := 0
	conn := "c1"
	for range 2 {
		if err := l.Connect(broker.Env{}, func() (*string, error) { dials++; return &conn, nil }); err != nil {
			t.Fatal(err)
		}
	}
	if c, err := l.Current(); err != nil || c != &conn || dials != 1 || l.Env.Logger == nil {
		t.Fatalf("connected: %v %v, %d dials, env %+v", c, err, dials, l.Env)
	}
	var torn *string
	if err := l.Close(context.Background(), func(c *string) error { torn = c; return boom }); !errors.Is(err, boom) || torn != &conn {
		t.Fatalf("Close: %v, teardown got %v", err, torn)
	}
	if _, err := l.Current(); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if err := l.Close(context.Background(), func(*string) error { t.Fatal("torn down twice"); return nil }); err != nil {
		t.Fatal(err)
	}
}
