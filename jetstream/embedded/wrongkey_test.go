package embedded_test

import (
	"context"
	"errors"
	"testing"

	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/jetstream/embedded"
)

// A store started with another encryption key than the one it was written
// with is refused with ErrStoreUnreadable (its streams cannot be read),
// instead of a server that runs without them.
func TestWrongEncryptionKeyRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := embedded.Start(embedded.Options{StoreDir: dir, EncryptionKey: "the-first-key-of-this-store-0123"})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	j, _ := js.New(nc)
	ctx := context.Background()
	if _, err := j.CreateStream(ctx, js.StreamConfig{Name: "S", Subjects: []string{"s"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Publish(ctx, "s", []byte("x")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	s.Shutdown()
	s, err = embedded.Start(embedded.Options{StoreDir: dir, EncryptionKey: "another-key-not-the-one-written-9"})
	if err == nil {
		s.Shutdown()
		t.Fatal("a store written with another key started")
	}
	if !errors.Is(err, embedded.ErrStoreUnreadable) {
		t.Fatalf("Start: %v, want ErrStoreUnreadable", err)
	}
	// The right key still reads it.
	s, err = embedded.Start(embedded.Options{StoreDir: dir, EncryptionKey: "the-first-key-of-this-store-0123"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, _ = s.Connect()
	defer nc.Close()
	j, _ = js.New(nc)
	if st, err := j.Stream(ctx, "S"); err != nil || st.CachedInfo().State.Msgs != 1 {
		t.Fatalf("read back with the right key: %v", err)
	}
}
