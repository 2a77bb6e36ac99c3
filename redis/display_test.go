package redis

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/microchannels/channels/broker"
)

// TestDisplayHidesPasswords (issue 26 item 6): String() and the errors of
// New show the scheme and hosts only. A password starting with digits and
// holding "#", "/" or "?" parsed as a port and was shown in full (and the
// client would have dialed the wrong host without its password): such a URL
// is now refused, naming only scheme and hosts.
func TestDisplayHidesPasswords(t *testing.T) {
	const secret = "123#ab/c?d"
	forms := []struct {
		raw, want string // want: String(), or "" for a refused URL
	}{
		{"redis://user:s3cret@127.0.0.1:6379/2", "redis redis://127.0.0.1:6379"},
		{"rediss://:s3cret@10.0.0.1:6380", "redis rediss://10.0.0.1:6380"},
		{"redis://u:p%40ss@h:1?addr=h2:2&addr=h3:3", "redis redis://h:1,h2:2,h3:3"},
		{"redis://user:123#abc@127.0.0.1:6379", ""},
		{"redis://:123/abc@127.0.0.1:6379", ""},
		{"rediss://user:123?abc@127.0.0.1:6379", ""},
		{"redis://user:" + secret + "@127.0.0.1:6379", ""},
		{"redis://user:123#abc@127.0.0.1:6379?addr=127.0.0.1:7001", ""},
	}
	for _, f := range forms {
		a, err := New(f.raw)
		if f.want == "" {
			if !errors.Is(err, broker.ErrInvalidOption) {
				t.Errorf("%s: accepted (%v)", f.raw, a)
				continue
			}
			for _, frag := range []string{"123", "abc", "ab/c"} {
				if strings.Contains(err.Error(), frag) {
					t.Errorf("%s: the error shows %q: %v", f.raw, frag, err)
				}
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", f.raw, err)
			continue
		}
		if s := a.String(); s != f.want {
			t.Errorf("%s: String() = %q, want %q", f.raw, s, f.want)
		}
	}
}

// TestClusterTLSServerName (issue 26 item 7): the TLS configuration of a
// rediss:// cluster verified every node against the first host's name.
func TestClusterTLSServerName(t *testing.T) {
	a, err := New("rediss://u:p@node1:7001?addr=node2:7002&addr=node3:7003")
	if err != nil {
		t.Fatal(err)
	}
	if c := a.uopts.TLSConfig; c == nil || c.ServerName != "" {
		t.Fatalf("cluster TLS config %+v: ServerName pinned", c)
	}
	a, err = New("rediss://u:p@node1:7001", WithClusterAddrs("node1:7001", "node2:7002"))
	if err != nil {
		t.Fatal(err)
	}
	if c := a.uopts.TLSConfig; c == nil || c.ServerName != "" {
		t.Fatalf("WithClusterAddrs TLS config %+v: ServerName pinned", c)
	}
	// A ServerName the caller set stays.
	mine := &tls.Config{ServerName: "redis.internal"}
	a, err = New("rediss://u:p@node1:7001", WithTLS(mine), WithClusterAddrs("node1:7001", "node2:7002"))
	if err != nil {
		t.Fatal(err)
	}
	if a.uopts.TLSConfig != mine || mine.ServerName != "redis.internal" {
		t.Fatalf("the caller's TLS config was replaced or changed")
	}
	// A single node keeps the URL's host as its ServerName.
	a, err = New("rediss://u:p@node1:7001")
	if err != nil {
		t.Fatal(err)
	}
	if a.uopts.TLSConfig.ServerName != "node1" {
		t.Fatalf("single node ServerName %q", a.uopts.TLSConfig.ServerName)
	}
}
