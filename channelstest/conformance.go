package channelstest

import (
	"runtime"
	"sort"
	"strings"

	. "github.com/onsi/ginkgo/v2"
)

type user struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
	Age  int    `json:"age"`
}

func conformance(tg Target) {
	Describe("delivery and groups", func() { deliverySpecs(tg) })
	Describe("retries and backoff", func() { retriesSpecs(tg) })
	Describe("MaxInFlight, order and namespaces", func() { flowSpecs(tg) })
	Describe("dead letters and poison messages", func() { deadletterSpecs(tg) })
	Describe("stop, restart and typed errors", func() { stopSpecs(tg) })
	Describe("batches, interceptors, handler context and stacked plugins", func() { apiSpecs(tg) })
	Describe("operations tooling", func() { toolingSpecs(tg) })
	observability(tg)
}

func idsOf(r *Recorder) []int {
	var ids []int
	for _, u := range decodeAll[user](r.All()) {
		ids = append(ids, u.ID)
	}
	sort.Ints(ids)
	return ids
}

func slicesCompact(s []int) []int {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// clientGoroutines counts the goroutines of the process, except those of a
// broker embedded in the test process (an in-process NATS server starts
// goroutines of its own for every new stream and consumer).
func clientGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "nats-server/v2/server.") {
			count++
		}
	}
	return count
}
