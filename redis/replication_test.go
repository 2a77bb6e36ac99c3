package redis

import (
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
)

func TestWaitReplicasOptions(t *testing.T) {
	if _, err := New("redis://127.0.0.1:6379", WithWaitReplicas(-1, 0)); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("negative replicas: err = %v, want ErrInvalidOption", err)
	}
	if _, err := New("redis://127.0.0.1:6379", WithWaitReplicas(1, -time.Second)); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("negative timeout: err = %v, want ErrInvalidOption", err)
	}
	for _, o := range []SendOptions{{WaitReplicas: -2}, {WaitTimeout: -1}} {
		if err := o.Validate(); !errors.Is(err, broker.ErrInvalidOption) {
			t.Fatalf("%+v: err = %v, want ErrInvalidOption", o, err)
		}
	}
	if err := (SendOptions{WaitReplicas: -1}).Validate(); err != nil {
		t.Fatalf("WaitReplicas -1 (no wait) refused: %v", err)
	}
}

func TestWaitFor(t *testing.T) {
	none, err := New("redis://127.0.0.1:6379")
	if err != nil {
		t.Fatal(err)
	}
	two, err := New("redis://127.0.0.1:6379", WithWaitReplicas(2, 0))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		a    *Adapter
		o    SendOptions
		set  bool
		want replication
	}{
		{"default: no wait", none, SendOptions{}, false, replication{}},
		{"adapter, default timeout", two, SendOptions{}, false, replication{2, DefaultWaitTimeout}},
		{"send asks, adapter none", none, SendOptions{WaitReplicas: 1, WaitTimeout: 50 * time.Millisecond}, true, replication{1, 50 * time.Millisecond}},
		{"send overrides the count", two, SendOptions{WaitReplicas: 1}, true, replication{1, DefaultWaitTimeout}},
		{"send sets only the timeout", two, SendOptions{WaitTimeout: 300 * time.Millisecond}, true, replication{2, 300 * time.Millisecond}},
		{"send opts out", two, SendOptions{WaitReplicas: -1}, true, replication{}},
		{"a send option without wait keeps the adapter's", two, SendOptions{MaxLen: 5}, true, replication{2, DefaultWaitTimeout}},
	}
	for _, tt := range tests {
		if got := tt.a.waitFor(tt.o, tt.set); got != tt.want {
			t.Errorf("%s: waitFor = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestCheckWait(t *testing.T) {
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", ReadTimeout: time.Second})
	defer c.Close()
	if err := checkWait(c, replication{1, time.Second}); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("timeout = read timeout: err = %v, want ErrInvalidOption", err)
	}
	if err := checkWait(c, replication{1, 900 * time.Millisecond}); err != nil {
		t.Fatalf("timeout under the read timeout: %v", err)
	}
	if err := checkWait(c, replication{}); err != nil {
		t.Fatalf("no wait: %v", err)
	}
	r := goredis.NewRing(&goredis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer r.Close()
	if err := checkWait(r, replication{1, time.Millisecond}); !errors.Is(err, broker.ErrUnsupported) {
		t.Fatalf("ring: err = %v, want ErrUnsupported", err)
	}
}

func TestReplicationErrorWrapsErrPublish(t *testing.T) {
	cmd := goredis.NewCmd(t.Context(), "wait", 1, 10)
	cmd.SetVal(int64(0))
	err := replicated("orders", cmd, replication{1, 10 * time.Millisecond})
	var re *ReplicationError
	if !errors.Is(err, broker.ErrPublish) || !errors.As(err, &re) || re.Wanted != 1 || re.Acked != 0 {
		t.Fatalf("err = %#v, want a PublishError holding a ReplicationError", err)
	}
	if !strings.Contains(err.Error(), "may or may not survive a failover") {
		t.Fatalf("message does not say what it means: %v", err)
	}
	cmd.SetVal(int64(1))
	if err := replicated("orders", cmd, replication{1, 10 * time.Millisecond}); err != nil {
		t.Fatalf("enough replicas: %v", err)
	}
}

func TestRetryable(t *testing.T) {
	for _, e := range []string{"MOVED 3999 127.0.0.1:7002", "ASK 3999 127.0.0.1:7002", "CLUSTERDOWN The cluster is down",
		"TRYAGAIN x", "LOADING x"} {
		if !retryable(goredisError(e)) {
			t.Errorf("%q not retried", e)
		}
	}
	for _, e := range []string{"WRONGTYPE x", "ERR x", "NOSCRIPT x"} {
		if retryable(goredisError(e)) {
			t.Errorf("%q retried", e)
		}
	}
}

// goredisError is a Redis error reply as text (go-redis also recognises
// its error kinds by their prefix).
func goredisError(msg string) error { return errors.New(msg) }
