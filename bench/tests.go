package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Test is one of the measurements.
type Test int

const (
	// Latency is a ping-pong with exactly one message in flight: each
	// handler sends the next message, for a fixed time.
	Latency Test = iota
	// Sequential sends N messages one after the other, each awaited.
	Sequential
	// Concurrent sends the same N messages from many goroutines.
	Concurrent
	// Batch sends the N messages with the implementation's batch API.
	Batch
)

func (t Test) String() string {
	return [...]string{"latency", "sequential", "concurrent", "batch"}[t]
}

// A Case is one row group of the report: a test and the consumer's
// MaxInFlight.
type Case struct {
	Test        Test
	MaxInFlight int
}

func (c Case) String() string {
	if c.Test == Latency {
		return "latency"
	}
	return fmt.Sprintf("%s, MaxInFlight %d", c.Test, c.MaxInFlight)
}

// Result is what one run measured.
type Result struct {
	Rate     float64 `json:"rate"`               // msg/s
	P50      float64 `json:"p50,omitempty"`      // one-way ms (latency)
	P99      float64 `json:"p99,omitempty"`      // one-way ms (latency)
	Messages int     `json:"messages,omitempty"` // messages measured
}

// Params are the sizes of the runs.
type Params struct {
	N          int           // messages of a throughput run
	Senders    int           // goroutines of the concurrent test
	BatchSize  int           // messages per batch of the batch test
	LatencyFor time.Duration // measured time of the latency test
	Warmup     int           // unmeasured round trips before the latency test
	Timeout    time.Duration // bound of one run
}

// epoch is the origin of the timestamps carried by the payloads.
var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

// payload is {"i":<index>,"t":<ns since epoch at the start of the send>};
// the warm-up messages have i = -1.
func payload(i int, t int64) []byte {
	b := make([]byte, 0, 48)
	b = append(b, `{"i":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t, 10)
	return append(b, '}')
}

// parse reads a payload written by payload (or by node/bench.js).
func parse(p []byte) (i int, t int64, ok bool) {
	field := func(name byte) (int64, bool) {
		for k := 0; k+3 < len(p); k++ {
			if p[k] == '"' && p[k+1] == name && p[k+2] == '"' && p[k+3] == ':' {
				k += 4
				neg := false
				if k < len(p) && p[k] == '-' {
					neg, k = true, k+1
				}
				var v int64
				start := k
				for ; k < len(p) && p[k] >= '0' && p[k] <= '9'; k++ {
					v = v*10 + int64(p[k]-'0')
				}
				if k == start {
					return 0, false
				}
				if neg {
					v = -v
				}
				return v, true
			}
		}
		return 0, false
	}
	iv, ok1 := field('i')
	tv, ok2 := field('t')
	return int(iv), tv, ok1 && ok2
}

// warmUp sends warm-up messages until one is handled: the consumer is
// subscribed and both sides are connected.
func warmUp(ctx context.Context, s Session, warm <-chan struct{}) error {
	for {
		if err := s.Send(ctx, payload(-1, now())); err != nil {
			return fmt.Errorf("warm-up send: %w", err)
		}
		select {
		case <-warm:
			// let the other warm-up messages in flight arrive
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			return nil
		case <-time.After(time.Second):
		case <-ctx.Done():
			return fmt.Errorf("warm-up: no message handled: %w", ctx.Err())
		}
	}
}

// runGo runs one case of a Go implementation on a fresh channel.
func runGo(ctx context.Context, impl Impl, channel string, c Case, p Params) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	cfg := Config{Test: c.Test, MaxInFlight: c.MaxInFlight, Senders: p.Senders, Batch: p.BatchSize}
	if c.Test == Latency {
		return runLatency(ctx, impl, channel, cfg, p)
	}
	return runThroughput(ctx, impl, channel, cfg, p)
}

func runLatency(ctx context.Context, impl Impl, channel string, cfg Config, p Params) (Result, error) {
	warm := make(chan struct{}, 1)
	var (
		sess     atomic.Pointer[Session]
		mu       sync.Mutex
		oneWay   []time.Duration
		startAt  atomic.Int64 // ns since epoch when the measured pings began
		last     atomic.Int64 // the last ping handled
		measured atomic.Int64
		endAt    atomic.Int64
		done     = make(chan struct{})
		errc     = make(chan error, 1)
	)
	handle := func(hctx context.Context, b []byte) {
		t1 := now()
		i, t0, ok := parse(b)
		if !ok {
			select {
			case errc <- fmt.Errorf("unreadable payload %q", b):
			default:
			}
			return
		}
		if i < 0 {
			select {
			case warm <- struct{}{}:
			default:
			}
			return
		}
		if int64(i) <= last.Load() {
			return // a redelivery: the ping went on already
		}
		last.Store(int64(i))
		switch {
		case i == p.Warmup:
			startAt.Store(t0)
			fallthrough
		case i > p.Warmup:
			mu.Lock()
			oneWay = append(oneWay, time.Duration(t1-t0))
			mu.Unlock()
			measured.Add(1)
			if time.Duration(t1-startAt.Load()) >= p.LatencyFor {
				endAt.Store(t1)
				close(done)
				return
			}
		}
		if err := (*sess.Load()).Send(hctx, payload(i+1, now())); err != nil {
			select {
			case errc <- fmt.Errorf("send from the handler: %w", err):
			default:
			}
		}
	}
	last.Store(-1)
	s, err := impl.Open(ctx, channel, cfg, handle)
	if err != nil {
		return Result{}, err
	}
	sess.Store(&s)
	defer closeSession(s)
	if err := warmUp(ctx, s, warm); err != nil {
		return Result{}, err
	}
	if err := s.Send(ctx, payload(0, now())); err != nil {
		return Result{}, err
	}
	select {
	case <-done:
	case err := <-errc:
		return Result{}, err
	case <-ctx.Done():
		return Result{}, fmt.Errorf("latency: %d round trips measured, then %w", measured.Load(), ctx.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	elapsed := time.Duration(endAt.Load() - startAt.Load())
	return Result{
		Rate:     float64(len(oneWay)) / elapsed.Seconds(),
		P50:      ms(percentile(oneWay, 0.50)),
		P99:      ms(percentile(oneWay, 0.99)),
		Messages: len(oneWay),
	}, nil
}

func runThroughput(ctx context.Context, impl Impl, channel string, cfg Config, p Params) (Result, error) {
	n := p.N
	warm := make(chan struct{}, 1)
	seen := make([]atomic.Bool, n)
	var (
		count atomic.Int64
		endAt atomic.Int64
		done  = make(chan struct{})
		errc  = make(chan error, 1)
	)
	handle := func(_ context.Context, b []byte) {
		i, _, ok := parse(b)
		switch {
		case !ok || i >= n:
			select {
			case errc <- fmt.Errorf("unexpected payload %q", b):
			default:
			}
		case i < 0:
			select {
			case warm <- struct{}{}:
			default:
			}
		case !seen[i].Swap(true):
			if count.Add(1) == int64(n) {
				endAt.Store(now())
				close(done)
			}
		}
	}
	s, err := impl.Open(ctx, channel, cfg, handle)
	if err != nil {
		return Result{}, err
	}
	defer closeSession(s)
	if cfg.Test == Batch {
		if err := s.SendBatch(ctx, nil); err != nil { // n/a before any work
			return Result{}, err
		}
	}
	if err := warmUp(ctx, s, warm); err != nil {
		return Result{}, err
	}
	start := now()
	switch cfg.Test {
	case Sequential:
		for i := range n {
			if err := s.Send(ctx, payload(i, now())); err != nil {
				return Result{}, err
			}
		}
	case Concurrent:
		err = fanOut(n, cfg.Senders, func(i int) error { return s.Send(ctx, payload(i, now())) })
	case Batch:
		for from := 0; from < n && err == nil; from += cfg.Batch {
			batch := make([][]byte, 0, cfg.Batch)
			t := now()
			for i := from; i < min(n, from+cfg.Batch); i++ {
				batch = append(batch, payload(i, t))
			}
			err = s.SendBatch(ctx, batch)
		}
	}
	if err != nil {
		return Result{}, err
	}
	select {
	case <-done:
	case err := <-errc:
		return Result{}, err
	case <-ctx.Done():
		return Result{}, fmt.Errorf("%d of %d messages handled, then %w", count.Load(), n, ctx.Err())
	}
	return Result{Rate: float64(n) / time.Duration(endAt.Load()-start).Seconds(), Messages: n}, nil
}

// closeSession closes s within a bound of its own: a run that failed or
// timed out still releases its connections.
func closeSession(s Session) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = s.Close(ctx)
}

// fanOut runs send(i) for i in [0,n) from `senders` goroutines.
func fanOut(n, senders int, send func(int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var first error
	var once sync.Once
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := send(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p+0.5)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// isNA tells the errors that make a cell n/a rather than a failure.
func isNA(err error) bool { return errors.Is(err, errNoBatch) || errors.Is(err, errNotAvailable) }
