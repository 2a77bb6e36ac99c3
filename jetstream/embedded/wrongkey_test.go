package embedded_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
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

// A store holding, beside its streams, a directory left by a stream
// deletion in progress (".<name>") and one without a stream's meta.inf
// starts: the server recovers every stream it holds, and ignores those.
func TestStoreWithLeftoversStarts(t *testing.T) {
	for _, key := range []string{"", "the-key-of-this-store-0123456789"} {
		dir := t.TempDir()
		s, err := embedded.Start(embedded.Options{StoreDir: dir, EncryptionKey: key})
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
		nc.Close()
		s.Shutdown()
		streams, _ := filepath.Glob(filepath.Join(dir, "jetstream", "*", "streams"))
		if len(streams) != 1 {
			t.Fatalf("streams directories: %v", streams)
		}
		for _, d := range []string{".S_DELETED", "EMPTY"} {
			if err := os.MkdirAll(filepath.Join(streams[0], d, "msgs"), 0o750); err != nil {
				t.Fatal(err)
			}
		}
		s, err = embedded.Start(embedded.Options{StoreDir: dir, EncryptionKey: key})
		if err != nil {
			t.Fatalf("key %q: Start on a store with leftovers: %v", key, err)
		}
		s.Shutdown()
	}
}
