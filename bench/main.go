// Command bench measures the channels library side by side with the raw
// driver at its best, Watermill and the Node @moleculer/channels, on the
// same broker in the same run, for each adapter:
//
//   - latency: a ping-pong with exactly one message in flight (each
//     handler sends the next message) for a fixed time; round trips per
//     second, and the one-way time from the start of a send to the start
//     of the handler (p50, p99);
//   - sequential: N messages, each send awaited before the next, to a
//     channel consumed with MaxInFlight 10 and 100; first send to last
//     handled;
//   - concurrent: the same N messages sent by many goroutines;
//   - batch: the same N messages sent with each implementation's batch API.
//
// Every run has a channel of its own, warmed up until a message went
// through; the cases repeat (-reps) and the report gives medians and
// min-max. It prints a Markdown table and, with -out, writes bench.md,
// bench.png and bench.json there; with -readme, it replaces the part of
// the README between the bench markers with a compact table of the
// channels/raw ratios (a row per test, a column per adapter). -merge keeps
// the rows of the adapters of a previous bench.json that were not measured
// again (make bench-cluster adds the cluster profiles' rows this way);
// -render rebuilds every output from a saved bench.json without running
// anything.
//
//	cd bench && go run . -adapters redis,nats
//	cd bench && go run . -quick            # a smoke run: small N, one repetition
//	cd bench && go run . -render ../docs/bench.json -out ../docs -readme ../README.md
//
// It is a module of its own so that Watermill and the chart library stay
// out of the library's go.mod. Broker addresses come from the variables of
// the test suite (CHANNELS_REDIS_URL, CHANNELS_REDIS_CLUSTER,
// CHANNELS_AMQP_URL, CHANNELS_NATS_URL, CHANNELS_KAFKA_BROKERS).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Columns of the report, in order.
const (
	colChannels  = "channels"
	colRaw       = "raw"
	colWatermill = "watermill"
	colNode      = "node"
)

var columns = []string{colChannels, colRaw, colWatermill, colNode}

// record starts a CPU profile or an execution trace written to path, and
// returns what stops it; nothing when path is empty. It exits on errors.
func record(path string, start func(io.Writer) error, stop func()) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = start(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return stop
}

// recordAllocs creates path and returns what writes the allocation profile
// of the run so far to it; nothing when path is empty. It exits on errors.
func recordAllocs(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return func() {
		if err := errors.Join(pprof.Lookup("allocs").WriteTo(f, 0), f.Close()); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
}

func main() {
	var (
		adaptersFlag = flag.String("adapters", "", "comma-separated adapters (default: "+strings.Join(defaultAdapters(), ",")+"; the cluster profiles "+strings.Join(clusterProfiles, ",")+" only when named)")
		implsFlag    = flag.String("impls", strings.Join(columns, ","), "comma-separated columns to measure")
		testsFlag    = flag.String("tests", "latency,sequential,concurrent,batch", "comma-separated tests")
		mifFlag      = flag.String("mif", "10,100", "MaxInFlight values of the sequential and concurrent tests")
		batchMIF     = flag.Int("batch-mif", 100, "MaxInFlight of the batch test")
		quick        = flag.Bool("quick", false, "smoke run: -n 1000 -reps 1 -latency 1s -warmup 20 -timeout 1m unless set")
		p            = Params{}
		reps         int
		out          = flag.String("out", "", "directory to write bench.md, bench.png and bench.json to (none: print only)")
		readme       = flag.String("readme", "", "README whose bench section (between the bench markers) is replaced")
		nodeBin      = flag.String("node", "node", "node binary")
		nodeScript   = flag.String("node-script", "node/bench.js", "the Node benchmark script")
		cpuProfile   = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
		render       = flag.String("render", "", "rebuild the outputs (-out, -readme, the printed table) from this saved bench.json, running nothing")
		merge        = flag.String("merge", "", "bench.json of a previous run: its rows of the adapters not measured now are kept (a missing file: none)")
		memProfile   = flag.String("memprofile", "", "write an allocation profile (allocs) of the whole run to this file at its end (go tool pprof -sample_index=alloc_space)")
		traceFile    = flag.String("trace", "", "write an execution trace of the whole run to this file (go tool trace; -pprof=sched for where goroutines waited to run)")
	)
	flag.IntVar(&p.N, "n", 10000, "messages per throughput run")
	flag.IntVar(&p.Senders, "senders", 64, "goroutines of the concurrent test")
	flag.IntVar(&p.BatchSize, "batch", 1000, "messages per batch of the batch test")
	flag.DurationVar(&p.LatencyFor, "latency", 5*time.Second, "measured time of the latency test")
	flag.IntVar(&p.Warmup, "warmup", 100, "unmeasured round trips before the latency test")
	flag.DurationVar(&p.Timeout, "timeout", 2*time.Minute, "bound of one run")
	flag.IntVar(&reps, "reps", 3, "repetitions")
	flag.Parse()
	defer record(*cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile)()
	defer record(*traceFile, trace.Start, trace.Stop)()
	defer recordAllocs(*memProfile)()
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range map[string]string{"n": "1000", "reps": "1", "latency": "1s", "warmup": "20", "timeout": "1m"} {
			if !set[name] {
				_ = flag.Set(name, v)
			}
		}
	}
	log.SetFlags(0)

	if *render != "" {
		rep, err := Load(*render)
		if err != nil {
			log.Fatal(err)
		}
		if err := output(rep, *out, *readme); err != nil {
			log.Fatal(err)
		}
		return
	}

	names := defaultAdapters()
	if *adaptersFlag != "" {
		names = list(*adaptersFlag)
		for _, n := range names {
			if brokers[n] == nil {
				log.Fatalf("unknown adapter %q (known: %s)", n, strings.Join(brokerNames(), ", "))
			}
		}
	}
	impls := list(*implsFlag)
	for _, im := range impls {
		if !slices.Contains(columns, im) {
			log.Fatalf("unknown column %q (known: %s)", im, strings.Join(columns, ", "))
		}
	}
	cases, err := buildCases(list(*testsFlag), list(*mifFlag), *batchMIF)
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	began := time.Now()

	rep := &Report{Params: p, Reps: reps, Cases: cases, Columns: impls, Started: began,
		Machine: describeMachine(), Versions: map[string]string{}}
	var node *nodeRunner
	if slices.Contains(impls, colNode) {
		if node, err = newNodeRunner(ctx, *nodeBin, *nodeScript); err != nil {
			log.Printf("moleculer-channels column: %v (n/a)", err)
			rep.Notes = append(rep.Notes, fmt.Sprintf("moleculer-channels: %v", err))
		} else {
			rep.Machine.Node = node.versions.Node
			rep.Machine.Moleculer = node.versions.Moleculer
			rep.Machine.NodeChannels = node.versions.Channels
		}
	}

	failed := false
	var active []string
	for _, name := range names {
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		v, err := brokers[name].Setup(sctx)
		cancel()
		if err != nil && slices.Contains(clusterProfiles, name) {
			err = fmt.Errorf("%w (a cluster profile: scripts/cluster.sh %s up first, or make bench-cluster CLUSTERS=%s)", err, name, name)
		}
		if err != nil {
			log.Printf("%s: %v", name, err)
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: not measured: %v", name, err))
			failed = true
			continue
		}
		rep.Versions[name] = v
		active = append(active, name)
	}
	rep.Adapters = active
	if len(active) == 0 && *merge != "" {
		log.Fatal("no adapter answered: nothing measured, nothing merged, every output left as it was")
	}

	seq := 0
	for r := range reps {
		for _, name := range active {
			b := brokers[name]
			for ci, c := range cases {
				// rotate the order of the columns from one repetition to the next
				order := append(slices.Clone(impls[r%len(impls):]), impls[:r%len(impls)]...)
				for _, col := range order {
					if ctx.Err() != nil {
						log.Fatal("interrupted")
					}
					cell := rep.cell(name, ci, col)
					if cell.NA != "" {
						continue
					}
					seq++
					channel := fmt.Sprintf("bench_%d_%d_%s", os.Getpid(), seq, col)
					t := time.Now()
					res, err := runOne(ctx, b, col, node, channel, c, p)
					cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					if cerr := b.Cleanup(cctx, channel); cerr != nil {
						log.Printf("  cleanup of %s: %v", channel, cerr)
					}
					cancel()
					switch {
					case isNA(err):
						cell.NA = naReason(col, err)
						continue
					case err != nil:
						cell.Errors = append(cell.Errors, err.Error())
						log.Printf("[%d/%d] %-13s %-30s %-10s FAILED after %s: %v", r+1, reps, name, c, col, time.Since(t).Round(time.Millisecond), err)
						continue
					}
					cell.Samples = append(cell.Samples, res)
					log.Printf("[%d/%d] %-13s %-30s %-10s %s (%s)", r+1, reps, name, c, col, res.short(c), time.Since(t).Round(time.Millisecond))
				}
			}
		}
	}
	rep.Took = time.Since(began)

	if *merge != "" {
		base, err := Load(*merge)
		switch {
		case err == nil:
			rep = Merge(base, rep)
		case errors.Is(err, fs.ErrNotExist):
		default:
			log.Fatal(err)
		}
	}
	if err := output(rep, *out, *readme); err != nil {
		log.Fatal(err)
	}
	log.Printf("took %s", time.Since(began).Round(time.Second))
	if failed {
		os.Exit(1)
	}
}

// output prints the report's Markdown and writes bench.md, bench.png and
// bench.json to out and the README's section to readme (each when set).
func output(rep *Report, out, readme string) error {
	fmt.Println()
	fmt.Print(rep.Markdown("bench.png"))
	if out != "" {
		if err := rep.Write(out); err != nil {
			return err
		}
		log.Printf("wrote %s/bench.md, bench.png, bench.json", out)
	}
	if readme != "" {
		if err := rep.UpdateReadme(readme, out); err != nil {
			return err
		}
		log.Printf("updated the bench section of %s", readme)
	}
	return nil
}

func buildCases(tests, mifs []string, batchMIF int) ([]Case, error) {
	var ms []int
	for _, m := range mifs {
		v, err := strconv.Atoi(m)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("bad MaxInFlight %q", m)
		}
		ms = append(ms, v)
	}
	var cases []Case
	for _, t := range tests {
		switch t {
		case "latency":
			cases = append(cases, Case{Test: Latency, MaxInFlight: 1})
		case "sequential", "concurrent":
			for _, m := range ms {
				cases = append(cases, Case{Test: map[string]Test{"sequential": Sequential, "concurrent": Concurrent}[t], MaxInFlight: m})
			}
		case "batch":
			cases = append(cases, Case{Test: Batch, MaxInFlight: batchMIF})
		default:
			return nil, fmt.Errorf("unknown test %q (latency, sequential, concurrent, batch)", t)
		}
	}
	return cases, nil
}

// errClusterColumn: Watermill and @moleculer/channels are not measured on
// the cluster profiles, whose replication settings (stream replicas, quorum
// queues, topic replication) only the channels and raw sides are given.
var errClusterColumn = fmt.Errorf("%w: channels and raw only on the cluster profiles", errNotAvailable)

func runOne(ctx context.Context, b Broker, col string, node *nodeRunner, channel string, c Case, p Params) (Result, error) {
	if (col == colWatermill || col == colNode) && slices.Contains(clusterProfiles, b.Name()) {
		return Result{}, errClusterColumn
	}
	switch col {
	case colChannels:
		return runGo(ctx, channelsImpl{b}, channel, c, p)
	case colRaw:
		return runGo(ctx, b.Raw(), channel, c, p)
	case colWatermill:
		w := b.Watermill()
		if w == nil {
			return Result{}, errNotAvailable
		}
		return runGo(ctx, w, channel, c, p)
	case colNode:
		if node == nil {
			return Result{}, errNotAvailable
		}
		return node.run(ctx, b, channel, c, p)
	}
	return Result{}, errors.New("unknown column " + col)
}

func naReason(col string, err error) string {
	switch {
	case errors.Is(err, errClusterColumn):
		return "channels and raw only on the cluster profiles (the replication settings are theirs)"
	case errors.Is(err, errNoBatch) && col == colNode:
		return "no batch send in @moleculer/channels 0.1.8"
	case errors.Is(err, errNoBatch):
		return "no batch send API yet"
	case col == colChannels:
		return "no adapter yet"
	}
	return "not available"
}
