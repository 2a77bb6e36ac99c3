package channelstest

import (
	"context"
	"net"
	"net/url"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest/linkfault"
)

// Links are the link-fault proxies of one adapter, one per broker address;
// a fault applies to all of them.
type Links struct {
	byUpstream map[string]*linkfault.Link
	all        []*linkfault.Link
}

// NewLinks starts a proxy to each upstream address; they close after the spec.
func NewLinks(upstreams ...string) *Links {
	GinkgoHelper()
	ls := &Links{byUpstream: map[string]*linkfault.Link{}}
	for _, u := range upstreams {
		l, err := linkfault.Start(u)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(l.Close)
		ls.byUpstream[u] = l
		ls.all = append(ls.all, l)
	}
	return ls
}

func (ls *Links) each(f func(*linkfault.Link)) {
	for _, l := range ls.all {
		f(l)
	}
}

// Freeze stops every byte on every link; the connections stay open.
func (ls *Links) Freeze() { ls.each((*linkfault.Link).Freeze) }

// Heal removes every fault.
func (ls *Links) Heal() { ls.each((*linkfault.Link).Heal) }

// ResetAll resets every connection through the links.
func (ls *Links) ResetAll() { ls.each((*linkfault.Link).ResetAll) }

// Kill closes the links and refuses new connections.
func (ls *Links) Kill() { ls.each((*linkfault.Link).Kill) }

// Latency delays every packet by d.
func (ls *Links) Latency(d time.Duration) { ls.each(func(l *linkfault.Link) { l.Latency(d) }) }

// Bandwidth limits every link to kbps kilobytes per second.
func (ls *Links) Bandwidth(kbps int) { ls.each(func(l *linkfault.Link) { l.Bandwidth(kbps) }) }

// SlowClose delays the close of every connection by d.
func (ls *Links) SlowClose(d time.Duration) {
	ls.each(func(l *linkfault.Link) { l.SlowClose(d) })
}

// Addr maps a broker address to its proxy (the address itself when it has
// none: a broker the test did not proxy).
func (ls *Links) Addr(upstream string) string {
	if l, ok := ls.byUpstream[upstream]; ok {
		return l.Addr()
	}
	return upstream
}

// Dial dials the proxy of addr; for clients that learn broker addresses
// from the broker (Kafka's advertised listeners, Redis Cluster's slots).
func (ls *Links) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, ls.Addr(addr))
}

// viaURL rewrites the host of a URL (host:port, or a comma list) to the
// proxies and returns the URL and the links.
func viaURL(raw string, defaultPort string) (string, *Links) {
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
	ls := NewLinks(hosts...)
	for i, h := range hosts {
		hosts[i] = ls.Addr(h)
	}
	u.Host = strings.Join(hosts, ",")
	return u.String(), ls
}

// LinkedURL is a Target's Linked hook built from a constructor taking a URL.
func LinkedURL(rawURL func() string, defaultPort string, build func(url string) (broker.Adapter, error)) func() (broker.Adapter, *Links, error) {
	return func() (broker.Adapter, *Links, error) {
		u, ls := viaURL(rawURL(), defaultPort)
		a, err := build(u)
		return a, ls, err
	}
}
