package redis

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels/broker"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		addrs   []string
		cluster bool
		user    string
		pass    string
		db      int
		tls     bool
		wantErr error

		clientName string
		poolSize   int
		protocol   int
	}{
		{name: "plain", url: "redis://127.0.0.1:6379", addrs: []string{"127.0.0.1:6379"}},
		{name: "db and acl user", url: "redis://alice:s3cret@host:6380/2", addrs: []string{"host:6380"}, user: "alice", pass: "s3cret", db: 2},
		{name: "password only", url: "redis://:pw@host:6379", addrs: []string{"host:6379"}, pass: "pw"},
		{name: "tls", url: "rediss://host:6379", addrs: []string{"host:6379"}, tls: true},
		{name: "cluster", url: "redis://a:7001?addr=b:7002&addr=c:7003", addrs: []string{"a:7001", "b:7002", "c:7003"}, cluster: true},
		{name: "query options", url: "redis://host:6379/1?client_name=svc&pool_size=7&dial_timeout=2s", addrs: []string{"host:6379"}, db: 1, clientName: "svc", poolSize: 7},
		{name: "resp3 asked for", url: "redis://host:6379?protocol=3", addrs: []string{"host:6379"}, protocol: 3},
		{name: "wrong scheme", url: "http://host", wantErr: broker.ErrInvalidOption},
		{name: "no host", url: "redis://", wantErr: broker.ErrInvalidOption},
		{name: "garbage", url: "redis://%zz", wantErr: broker.ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(tt.url)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			o := a.uopts
			if want := max(tt.protocol, DefaultProtocol); o.Protocol != want {
				t.Fatalf("protocol %d, want %d", o.Protocol, want)
			}
			if len(o.Addrs) != len(tt.addrs) || o.IsClusterMode != tt.cluster || o.Username != tt.user ||
				o.Password != tt.pass || o.DB != tt.db || (o.TLSConfig != nil) != tt.tls ||
				o.ClientName != tt.clientName || (tt.poolSize != 0 && o.PoolSize != tt.poolSize) {
				t.Fatalf("options %+v", o)
			}
			for i := range tt.addrs {
				if o.Addrs[i] != tt.addrs[i] {
					t.Fatalf("addrs %v, want %v", o.Addrs, tt.addrs)
				}
			}
		})
	}
}

func TestOptionErrors(t *testing.T) {
	tests := []struct {
		name string
		opt  Option
	}{
		{"negative min idle", WithChannelOptions(ChannelOptions{MinIdleTime: -1})},
		{"negative read timeout", WithChannelOptions(ChannelOptions{ReadTimeout: -1})},
		{"heartbeat not shorter than min idle", WithChannelOptions(ChannelOptions{MinIdleTime: time.Second, HeartbeatInterval: time.Second})},
		{"empty cluster", WithClusterAddrs()},
		{"negative default max len", WithDefaultMaxLen(-1, false)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New("redis://127.0.0.1:6379", tt.opt); !errors.Is(err, broker.ErrInvalidOption) {
				t.Fatalf("err = %v, want ErrInvalidOption", err)
			}
		})
	}
	if _, err := NewFromClient(nil); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatal(err)
	}
	if _, err := NewFromOptions(nil); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatal(err)
	}
}

func TestDefaults(t *testing.T) {
	o := ChannelOptions{}.withDefaults()
	if o.MinIdleTime != DefaultMinIdleTime || o.HeartbeatInterval != DefaultMinIdleTime/3 || o.StartID != "$" ||
		o.ReadTimeout != DefaultReadTimeout || o.ClaimInterval != DefaultClaimInterval {
		t.Fatalf("%+v", o)
	}
	over := kit.Overlay(ChannelOptions{MinIdleTime: time.Minute}, ChannelOptions{StartID: "0"}).withDefaults()
	if over.MinIdleTime != time.Minute || over.StartID != "0" || over.HeartbeatInterval != 20*time.Second {
		t.Fatalf("%+v", over)
	}
}

func TestResolveByURLAndName(t *testing.T) {
	for _, s := range []string{"redis://127.0.0.1:6379", "rediss://127.0.0.1:6380", "Redis", "redis"} {
		a, err := broker.Resolve(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if a.Name() != "Redis" {
			t.Fatal(a.Name())
		}
	}
	a, _ := New("redis://u:topsecret@127.0.0.1:6379")
	if s := a.String(); s == "" || strings.Contains(s, "topsecret") {
		t.Fatalf("String() leaks the password: %q", s)
	}
}
