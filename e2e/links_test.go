package e2e

import (
	"context"
	"net"
	"net/url"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/linkfault"
)

// links are the link-fault proxies of one adapter, one per broker address;
// a fault applies to all of them.
type links struct {
	byUpstream map[string]*linkfault.Link
	all        []*linkfault.Link
}

// newLinks starts a proxy to each upstream address; they close after the spec.
func newLinks(upstreams ...string) *links {
	GinkgoHelper()
	ls := &links{byUpstream: map[string]*linkfault.Link{}}
	for _, u := range upstreams {
		l, err := linkfault.Start(u)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(l.Close)
		ls.byUpstream[u] = l
		ls.all = append(ls.all, l)
	}
	return ls
}

func (ls *links) each(f func(*linkfault.Link)) {
	for _, l := range ls.all {
		f(l)
	}
}

func (ls *links) Freeze()                 { ls.each((*linkfault.Link).Freeze) }
func (ls *links) Heal()                   { ls.each((*linkfault.Link).Heal) }
func (ls *links) ResetAll()               { ls.each((*linkfault.Link).ResetAll) }
func (ls *links) Kill()                   { ls.each((*linkfault.Link).Kill) }
func (ls *links) Latency(d time.Duration) { ls.each(func(l *linkfault.Link) { l.Latency(d) }) }

// addr maps a broker address to its proxy (the address itself when it has
// none: a broker the test did not proxy).
func (ls *links) addr(upstream string) string {
	if l, ok := ls.byUpstream[upstream]; ok {
		return l.Addr()
	}
	return upstream
}

// dial dials the proxy of addr; for clients that learn broker addresses
// from the broker (Kafka's advertised listeners, Redis Cluster's slots).
func (ls *links) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, ls.addr(addr))
}

// viaURL rewrites the host of a URL (host:port, or a comma list) to the
// proxies and returns the URL and the links.
func viaURL(raw string, defaultPort string) (string, *links) {
	GinkgoHelper()
	u, err := url.Parse(raw)
	Expect(err).NotTo(HaveOccurred())
	var hosts []string
	for _, h := range strings.Split(u.Host, ",") {
		if !strings.Contains(h, ":") {
			h += ":" + defaultPort
		}
		hosts = append(hosts, h)
	}
	ls := newLinks(hosts...)
	for i, h := range hosts {
		hosts[i] = ls.addr(h)
	}
	u.Host = strings.Join(hosts, ",")
	return u.String(), ls
}

// linkedAdapter is a Target's Linked hook built from a constructor taking a URL.
func linkedURL(rawURL func() string, defaultPort string, build func(url string) (broker.Adapter, error)) func() (broker.Adapter, *links, error) {
	return func() (broker.Adapter, *links, error) {
		u, ls := viaURL(rawURL(), defaultPort)
		a, err := build(u)
		return a, ls, err
	}
}
