package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Report holds every sample of a run of the program.
type Report struct {
	Started  time.Time         `json:"started"`
	Took     time.Duration     `json:"took"`
	Machine  Machine           `json:"machine"`
	Versions map[string]string `json:"versions"` // broker versions by adapter
	Params   Params            `json:"params"`
	Reps     int               `json:"reps"`
	Adapters []string          `json:"adapters"`
	Cases    []Case            `json:"cases"`
	Columns  []string          `json:"columns"`
	Cells    []*Cell           `json:"cells"`
	Notes    []string          `json:"notes,omitempty"`
}

// Cell is one implementation on one adapter for one case.
type Cell struct {
	Adapter string   `json:"adapter"`
	Case    int      `json:"case"`
	Column  string   `json:"column"`
	Samples []Result `json:"samples,omitempty"`
	Errors  []string `json:"errors,omitempty"`
	NA      string   `json:"na,omitempty"`
}

func (r *Report) cell(adapter string, c int, col string) *Cell {
	for _, x := range r.Cells {
		if x.Adapter == adapter && x.Case == c && x.Column == col {
			return x
		}
	}
	x := &Cell{Adapter: adapter, Case: c, Column: col}
	r.Cells = append(r.Cells, x)
	return x
}

func (r *Report) find(adapter string, c int, col string) *Cell {
	for _, x := range r.Cells {
		if x.Adapter == adapter && x.Case == c && x.Column == col {
			return x
		}
	}
	return nil
}

// A metric is one row kind of a case.
type metric struct {
	label  string
	unit   string // "msg/s" or "ms"
	value  func(Result) float64
	higher bool // higher is better
}

func metrics(c Case) []metric {
	rate := func(r Result) float64 { return r.Rate }
	if c.Test == Latency {
		return []metric{
			{"latency, round trips/s", "msg/s", rate, true},
			{"latency p50, ms one way", "ms", func(r Result) float64 { return r.P50 }, false},
			{"latency p99, ms one way", "ms", func(r Result) float64 { return r.P99 }, false},
		}
	}
	return []metric{{c.String() + ", msg/s", "msg/s", rate, true}}
}

// stats are the median, min and max of a cell's samples of a metric.
type stats struct {
	med, lo, hi float64
	n           int
}

func (x *Cell) stats(m metric) (stats, bool) {
	if x == nil || len(x.Samples) == 0 {
		return stats{}, false
	}
	vs := make([]float64, len(x.Samples))
	for i, s := range x.Samples {
		vs[i] = m.value(s)
	}
	sort.Float64s(vs)
	med := vs[len(vs)/2]
	if len(vs)%2 == 0 {
		med = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
	}
	return stats{med: med, lo: vs[0], hi: vs[len(vs)-1], n: len(vs)}, true
}

func (r Result) short(c Case) string {
	if c.Test == Latency {
		return fmt.Sprintf("%s round trips/s, p50 %s ms, p99 %s ms", num(r.Rate, "msg/s"), num(r.P50, "ms"), num(r.P99, "ms"))
	}
	return num(r.Rate, "msg/s") + " msg/s"
}

// num formats a value: msg/s as an integer with thousands separators, ms
// with three significant digits.
func num(v float64, unit string) string {
	if unit == "ms" {
		switch {
		case v >= 100:
			return fmt.Sprintf("%.0f", v)
		case v >= 10:
			return fmt.Sprintf("%.1f", v)
		case v >= 1:
			return fmt.Sprintf("%.2f", v)
		case v >= 0.001:
			return fmt.Sprintf("%.3f", v)
		}
		return fmt.Sprintf("%.2g", v)
	}
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	return b.String()
}

var columnTitles = map[string]string{
	colChannels:  "channels",
	colRaw:       "raw ceiling",
	colWatermill: "Watermill",
	colNode:      "moleculer-channels",
}

// format renders a cell: "median (min–max)", n/a or failed.
func (r *Report) format(x *Cell, m metric, foot func(string) string) string {
	if x == nil {
		return "–"
	}
	if x.NA != "" {
		return "n/a" + foot(x.NA)
	}
	st, ok := x.stats(m)
	if !ok {
		if len(x.Errors) > 0 {
			return "failed" + foot(x.Errors[len(x.Errors)-1])
		}
		return "–"
	}
	s := num(st.med, m.unit)
	if st.n > 1 {
		s += fmt.Sprintf(" (%s–%s)", num(st.lo, m.unit), num(st.hi, m.unit))
	}
	if len(x.Errors) > 0 {
		s += fmt.Sprintf(", %d of %d runs failed", len(x.Errors), len(x.Errors)+st.n) + foot(x.Errors[len(x.Errors)-1])
	}
	return s
}

// Table is the Markdown table of the report, with its footnotes.
func (r *Report) Table() string {
	var notes []string
	foot := func(s string) string {
		i := slices.Index(notes, s)
		if i < 0 {
			notes = append(notes, s)
			i = len(notes) - 1
		}
		return fmt.Sprintf("<sup>%d</sup>", i+1)
	}
	var b strings.Builder
	b.WriteString("| test | adapter |")
	for _, col := range r.Columns {
		b.WriteString(" " + columnTitles[col] + " |")
	}
	hasRatio := slices.Contains(r.Columns, colChannels) && slices.Contains(r.Columns, colRaw)
	if hasRatio {
		b.WriteString(" channels/raw |")
	}
	b.WriteString("\n|---|---|")
	for range r.Columns {
		b.WriteString("---:|")
	}
	if hasRatio {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for ci, c := range r.Cases {
		for _, m := range metrics(c) {
			for _, a := range r.Adapters {
				fmt.Fprintf(&b, "| %s | %s |", m.label, a)
				for _, col := range r.Columns {
					b.WriteString(" " + r.format(r.find(a, ci, col), m, foot) + " |")
				}
				if hasRatio {
					b.WriteString(" " + r.ratio(a, ci, m) + " |")
				}
				b.WriteString("\n")
			}
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n")
		for i, n := range notes {
			fmt.Fprintf(&b, "<sup>%d</sup> %s  \n", i+1, strings.ReplaceAll(n, "|", "/"))
		}
	}
	return b.String()
}

func (r *Report) ratio(a string, ci int, m metric) string {
	ch, ok1 := r.find(a, ci, colChannels).stats(m)
	raw, ok2 := r.find(a, ci, colRaw).stats(m)
	if !ok1 || !ok2 || raw.med == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", ch.med/raw.med)
}

// Header is the machine, the versions and the parameters.
func (r *Report) Header() string {
	m := r.Machine
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s, %d cores, %s RAM, %s (Linux %s); Go %s",
		m.CPU, m.Cores, m.RAM, m.OS, m.Kernel, strings.TrimPrefix(m.Go, "go"))
	if m.Node != "" {
		fmt.Fprintf(&b, ", Node %s", strings.TrimPrefix(m.Node, "v"))
	}
	var vs []string
	for _, a := range r.Adapters {
		if a != "memory" {
			vs = append(vs, r.Versions[a])
		}
	}
	if len(vs) > 0 {
		b.WriteString(". Brokers on the same host: " + strings.Join(vs, ", "))
	}
	b.WriteString(".\n")
	fmt.Fprintf(&b, "Compared: channels (this repository) with the raw drivers (%s), Watermill %s (%s)",
		m.moduleList("github.com/redis/go-redis/v9", "github.com/rabbitmq/amqp091-go", "github.com/nats-io/nats.go", "github.com/segmentio/kafka-go"),
		m.Modules["github.com/ThreeDotsLabs/watermill"],
		m.moduleList("github.com/ThreeDotsLabs/watermill-redisstream", "github.com/ThreeDotsLabs/watermill-amqp/v3",
			"github.com/ThreeDotsLabs/watermill-nats/v2", "github.com/ThreeDotsLabs/watermill-kafka/v3"))
	if m.NodeChannels != "" {
		fmt.Fprintf(&b, " and @moleculer/channels %s (moleculer %s)", m.NodeChannels, m.Moleculer)
	}
	b.WriteString(".\n")
	b.WriteString(r.runsLine())
	return b.String()
}

// runsLine is the header's line of the sizes of the runs.
func (r *Report) runsLine() string {
	return fmt.Sprintf("Runs: %s messages per throughput run, %d concurrent senders, batches of %s; latency measured for %s after %d round trips; %d repetition(s), median (min–max); %s, %s in all.\n",
		num(float64(r.Params.N), "msg/s"), r.Params.Senders, num(float64(r.Params.BatchSize), "msg/s"), r.Params.LatencyFor, r.Params.Warmup,
		r.Reps, r.Started.UTC().Format("2006-01-02"), r.Took.Round(time.Second))
}

// Markdown is the header, the chart and the table (img: the chart's path
// from the Markdown file; "" leaves it out).
func (r *Report) Markdown(img string) string {
	var b strings.Builder
	b.WriteString(r.Header())
	if img != "" {
		fmt.Fprintf(&b, "\n![channels, Watermill and moleculer-channels relative to the raw driver](%s)\n", img)
	}
	b.WriteString("\nchannels/raw: the channels median over the raw median (msg/s: below 1 is slower than raw; ms: above 1 is slower).\n\n")
	b.WriteString(r.Table())
	if len(r.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.Notes {
			b.WriteString(n + "  \n")
		}
	}
	return b.String()
}

// Write writes bench.md, bench.png and bench.json to dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := r.Chart(filepath.Join(dir, "bench.png")); err != nil {
		return err
	}
	doc := "# Benchmarks side by side\n\n" +
		"Written by `make bench` (the program in [bench/](../bench)); see [the method](#method) below.\n\n" +
		r.Markdown("bench.png") + "\n" + methodText
	if err := os.WriteFile(filepath.Join(dir, "bench.md"), []byte(doc), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "bench.json"), append(js, '\n'), 0o644)
}

const (
	readmeBegin = "<!-- bench:begin (written by make bench) -->"
	readmeEnd   = "<!-- bench:end -->"
)

// UpdateReadme replaces the README's text between the bench markers with
// the compact section (Compact), linking the full report in outDir (none:
// docs/bench.md beside the README).
func (r *Report) UpdateReadme(path, outDir string) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	i := bytes.Index(src, []byte(readmeBegin))
	j := bytes.Index(src, []byte(readmeEnd))
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q ... %q section", path, readmeBegin, readmeEnd)
	}
	if outDir == "" {
		outDir = filepath.Join(filepath.Dir(path), "docs")
	}
	rel, err := filepath.Rel(filepath.Dir(path), filepath.Join(outDir, "bench.md"))
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.Write(src[:i+len(readmeBegin)])
	b.WriteString("\n" + r.Compact(filepath.ToSlash(rel)))
	b.Write(src[j:])
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// compactLabel is a case's row title in the compact table.
func compactLabel(c Case) string {
	switch c.Test {
	case Latency:
		return "latency p50"
	case Batch:
		return "batch"
	}
	return fmt.Sprintf("%s @%d", c.Test, c.MaxInFlight)
}

// compactMetric is the metric of a case in the compact table: the one-way
// p50 of the latency test, the rate of the others.
func compactMetric(c Case) metric {
	ms := metrics(c)
	if c.Test == Latency {
		return ms[1]
	}
	return ms[0]
}

// CompactTable is one table of the channels/raw ratios: a row per case, a
// column per adapter.
func (r *Report) CompactTable() string {
	var b strings.Builder
	b.WriteString("| channels/raw |")
	for _, a := range r.Adapters {
		b.WriteString(" " + a + " |")
	}
	b.WriteString("\n|---|")
	for range r.Adapters {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for ci, c := range r.Cases {
		m := compactMetric(c)
		b.WriteString("| " + compactLabel(c) + " |")
		for _, a := range r.Adapters {
			b.WriteString(" " + r.ratio(a, ci, m) + " |")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Compact is the README's section: the machine and run lines of the
// header, the ratio table and a line linking the full report (full: its
// path from the README).
func (r *Report) Compact(full string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSuffix(r.Header(), "\n"), "\n") {
		if !strings.HasPrefix(line, "Compared:") {
			b.WriteString(line + "\n")
		}
	}
	b.WriteString("\nchannels/raw: the channels median over the raw driver's (throughput: below 1 is slower than raw; latency p50: above 1 is slower).\n\n")
	b.WriteString(r.CompactTable())
	fmt.Fprintf(&b, "\nAbsolute numbers with min–max, p99, the chart, Watermill and @moleculer/channels, notes: [%s](%s).\n", path.Base(full), full)
	return b.String()
}

// relative is a metric of a column relative to raw, higher is better
// (raw/value for times), or NaN.
func (r *Report) relative(a string, ci int, col string, m metric) float64 {
	v, ok1 := r.find(a, ci, col).stats(m)
	raw, ok2 := r.find(a, ci, colRaw).stats(m)
	if !ok1 || !ok2 || raw.med == 0 || v.med == 0 {
		return math.NaN()
	}
	if m.higher {
		return v.med / raw.med
	}
	return raw.med / v.med
}
