// Package linkfault puts a TCP proxy with injectable faults between a client
// and a broker, for tests that walk what happens when the link misbehaves:
// it freezes (the connection stays open and no byte moves), slows down,
// loses bandwidth, is reset, or closes slowly. It runs Shopify's toxiproxy
// in-process: no daemon, one proxy per broker address.
//
//	l := linkfault.New(t, "127.0.0.1:6379")
//	client := dial(l.Addr())
//	l.Freeze()      // every open connection hangs, new ones hang too
//	l.ResetAll()    // every connection is closed; new ones are accepted
//	l.Kill()        // every connection is closed; new ones are refused
package linkfault

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

var (
	serverOnce sync.Once
	server     *toxiproxy.ApiServer
	names      sync.Mutex
	count      int
)

func apiServer() *toxiproxy.ApiServer {
	serverOnce.Do(func() {
		server = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	})
	return server
}

// Link is one proxied broker address.
type Link struct {
	p        *toxiproxy.Proxy
	addr     string // the proxy's address, fixed at Start (p.Listen is rewritten by each restart)
	upstream string
	mu       sync.Mutex
	toxics   []string
}

// New starts a proxy to upstream on a free loopback port; it is closed when
// the test ends.
func New(tb testing.TB, upstream string) *Link {
	tb.Helper()
	l, err := Start(upstream)
	if err != nil {
		tb.Fatalf("linkfault: %v", err)
	}
	tb.Cleanup(l.Close)
	return l
}

// Start starts a proxy to upstream on a free loopback port; Close stops it.
func Start(upstream string) (*Link, error) {
	names.Lock()
	count++
	name := fmt.Sprintf("link-%d", count)
	names.Unlock()
	p := toxiproxy.NewProxy(apiServer(), name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("proxy to %s: %w", upstream, err)
	}
	return &Link{p: p, addr: p.Listen, upstream: upstream}, nil
}

// Addr is the host:port to dial instead of the upstream.
func (l *Link) Addr() string { return l.addr }

// Upstream is the proxied address.
func (l *Link) Upstream() string { return l.upstream }

// Port is the port of Addr.
func (l *Link) Port() string {
	_, port, _ := net.SplitHostPort(l.Addr())
	return port
}

func (l *Link) add(name, typ, stream string, attrs string) {
	js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name, typ, stream, attrs)
	if _, err := l.p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		panic(fmt.Sprintf("linkfault: add %s: %v", name, err))
	}
	l.mu.Lock()
	l.toxics = append(l.toxics, name)
	l.mu.Unlock()
}

// both adds a toxic on both directions.
func (l *Link) both(typ, attrs string) {
	l.add(typ+"_up", typ, "upstream", attrs)
	l.add(typ+"_down", typ, "downstream", attrs)
}

// Freeze stops every byte in both directions; connections stay open (and
// new ones are accepted, then hang). What was sent while frozen is lost:
// after a freeze, the test kills or resets the link.
func (l *Link) Freeze() { l.both("timeout", `{"timeout":0}`) }

// Latency delays every chunk of data by d in each direction.
func (l *Link) Latency(d time.Duration) {
	l.both("latency", fmt.Sprintf(`{"latency":%d,"jitter":0}`, d.Milliseconds()))
}

// Bandwidth limits each direction to kbps kilobytes a second.
func (l *Link) Bandwidth(kbps int) { l.both("bandwidth", fmt.Sprintf(`{"rate":%d}`, kbps)) }

// SlowClose delays the closing of each connection by d.
func (l *Link) SlowClose(d time.Duration) {
	l.both("slow_close", fmt.Sprintf(`{"delay":%d}`, d.Milliseconds()))
}

// ResetOnData resets each connection as soon as it carries data, in either
// direction (TCP RST), until Heal.
func (l *Link) ResetOnData() { l.both("reset_peer", `{"timeout":0}`) }

// Heal removes every fault; connections opened from then on work (one that
// was frozen has lost bytes: reset it).
func (l *Link) Heal() {
	l.mu.Lock()
	ts := l.toxics
	l.toxics = nil
	l.mu.Unlock()
	for _, t := range ts {
		_ = l.p.Toxics.RemoveToxic(context.Background(), t)
	}
}

// ResetAll closes every open connection at once; new connections are
// accepted (with the faults in place).
func (l *Link) ResetAll() {
	l.p.Stop()
	if err := l.restart(); err != nil {
		panic(fmt.Sprintf("linkfault: restart after reset: %v", err))
	}
}

// Kill closes every open connection and refuses new ones (the proxy no
// longer listens) until Revive.
func (l *Link) Kill() { l.p.Stop() }

// Revive listens again on the same address after Kill.
func (l *Link) Revive() error { return l.restart() }

func (l *Link) restart() error {
	var err error
	for range 50 { // the port may take a moment to be free again
		if err = l.p.Start(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Close stops the proxy and closes its connections.
func (l *Link) Close() { l.p.Stop() }
