package embedded_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream/embedded"
)

// A slow start of one shared server (its Configure blocks) does not hold
// back the start of another.
func TestSlowStartBlocksNoOtherServer(t *testing.T) {
	unblock := make(chan struct{})
	defer func() {
		select {
		case <-unblock:
		default:
			close(unblock)
		}
	}()
	starting := make(chan struct{})
	slow := embedded.NewShared(embedded.Options{Temporary: true, MaxMemory: 64 << 20,
		Configure: func(*server.Options) { close(starting); <-unblock }})
	slowDone := make(chan error, 1)
	go func() { slowDone <- slow.Connect(context.Background(), broker.Env{}) }()
	defer func() { _ = slow.Close(context.Background()) }()
	select {
	case <-starting:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow start never began")
	}
	other := embedded.NewShared(embedded.Options{Temporary: true, MaxMemory: 32 << 20})
	otherDone := make(chan error, 1)
	go func() { otherDone <- other.Connect(context.Background(), broker.Env{}) }()
	defer func() { _ = other.Close(context.Background()) }()
	select {
	case err := <-otherDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(unblock)
		t.Fatal("another server's start waited for the slow one")
	}
	close(unblock)
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
}

// Two programs whose executables share a name (every `go run` executable
// is named main) get different default stores; one program gets the same
// store at every run.
func TestDefaultStoreDirPerProgram(t *testing.T) {
	out := t.TempDir()
	dirs := map[string]string{}
	for _, prog := range []string{"a", "b"} {
		exe := filepath.Join(out, prog, "main")
		build := exec.Command("go", "build", "-o", exe, "./testdata/storedir/"+prog)
		if b, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", prog, err, b)
		}
		for range 2 {
			b, err := exec.Command(exe).Output()
			if err != nil {
				t.Fatal(err)
			}
			d := strings.TrimSpace(string(b))
			if prev, ok := dirs[prog]; ok && prev != d {
				t.Fatalf("program %s: store %s, then %s", prog, prev, d)
			}
			dirs[prog] = d
		}
	}
	if dirs["a"] == dirs["b"] {
		t.Fatalf("two programs named main share the store %s", dirs["a"])
	}
}
