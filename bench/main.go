// Command bench measures channels against the raw driver on the same broker,
// in the same run, with the method of the @moleculer/channels benchmark:
//
//   - latency: ping-pong with exactly one message in flight; the one-way time
//     from the start of a send to the start of the handler (p50, p99);
//
//   - throughput: N messages sent by concurrent senders to a channel consumed
//     with MaxInFlight 10 and 100, from the first send to the last handler.
//
//     go run ./bench -adapter redis -n 10000
//     go run ./bench -adapter nats -n 10000
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/microchannels/channels/e2e/brokerenv"
)

type result struct {
	name      string
	lib, raw  float64
	unit      string
	higherWin bool
}

func main() {
	adapter := flag.String("adapter", "redis", "broker to measure: redis, amqp, nats")
	n := flag.Int("n", 10000, "messages per throughput run")
	pings := flag.Int("pings", 2000, "round trips of the latency run")
	senders := flag.Int("senders", 64, "concurrent senders of the throughput run")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}

	ctx := context.Background()
	var rows []result
	var err error
	switch *adapter {
	case "redis":
		rows, err = benchRedis(ctx, brokerenv.RedisURL(), *pings, *n, *senders)
	case "amqp":
		rows, err = benchAMQP(ctx, brokerenv.AMQPURL(), *pings, *n, *senders)
	case "nats":
		rows, err = benchNATS(ctx, brokerenv.NATSURL(), *pings, *n, *senders)
	default:
		err = fmt.Errorf("unknown adapter %q", *adapter)
	}
	if err != nil {
		log.Print(err)
		return
	}
	host, _ := os.Hostname()
	fmt.Printf("\n%s on %s: %d CPUs, %s/%s, %s; %d messages, %d concurrent senders, %d pings\n\n",
		*adapter, host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), *n, *senders, *pings)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "measure\tchannels\traw driver\tchannels / raw\t")
	for _, r := range rows {
		ratio := r.lib / r.raw
		fmt.Fprintf(w, "%s\t%.3f %s\t%.3f %s\t%.2f\t\n", r.name, r.lib, r.unit, r.raw, r.unit, ratio)
	}
	w.Flush()
}

// percentile returns the p-th percentile of ds (sorted in place), in ms.
func percentile(ds []time.Duration, p float64) float64 {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	idx := int(float64(len(ds)-1) * p)
	return float64(ds[idx]) / float64(time.Millisecond)
}
