package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testReport has two adapters and every case kind; channels runs at half
// the raw rate and twice the raw p50 on "a", at the raw rate on "b".
func testReport(adapters ...string) *Report {
	cases := []Case{{Latency, 1}, {Sequential, 10}, {Concurrent, 100}, {Batch, 100}}
	r := &Report{Started: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC), Params: Params{N: 10000, Senders: 64, BatchSize: 1000},
		Reps: 1, Adapters: adapters, Cases: cases, Columns: []string{colChannels, colRaw}, Versions: map[string]string{}}
	for _, a := range adapters {
		r.Versions[a] = "Broker " + a
		for ci := range cases {
			f := 2.0
			if a == "b" {
				f = 1
			}
			r.cell(a, ci, colRaw).Samples = []Result{{Rate: 1000, P50: 0.1}}
			r.cell(a, ci, colChannels).Samples = []Result{{Rate: 1000 / f, P50: 0.1 * f}}
		}
	}
	return r
}

func TestCompactTable(t *testing.T) {
	got := testReport("a", "b").CompactTable()
	want := "| channels/raw | a | b |\n" +
		"|---|---:|---:|\n" +
		"| latency p50 | 2.00 | 1.00 |\n" +
		"| sequential @10 | 0.50 | 1.00 |\n" +
		"| concurrent @100 | 0.50 | 1.00 |\n" +
		"| batch | 0.50 | 1.00 |\n"
	if got != want {
		t.Fatalf("compact table:\n%s\nwant:\n%s", got, want)
	}
}

func TestCompactTableMissingCell(t *testing.T) {
	r := testReport("a")
	r.Adapters = append(r.Adapters, "c") // no cell at all
	r.cell("a", 3, colChannels).Samples = nil
	r.cell("a", 3, colChannels).NA = "no batch"
	got := r.CompactTable()
	if !strings.Contains(got, "| batch | – | – |\n") || !strings.Contains(got, "| latency p50 | 2.00 | – |\n") {
		t.Fatalf("missing cells not shown as –:\n%s", got)
	}
}

func TestUpdateReadmeCompact(t *testing.T) {
	dir := t.TempDir()
	readme := filepath.Join(dir, "README.md")
	old := "# X\n\n" + readmeBegin + "\nold\nlines\n" + readmeEnd + "\n\n## After\n"
	if err := os.WriteFile(readme, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := testReport("a", "b").UpdateReadme(readme, filepath.Join(dir, "docs")); err != nil {
		t.Fatal(err)
	}
	src, _ := os.ReadFile(readme)
	s := string(src)
	for _, want := range []string{"# X\n\n" + readmeBegin + "\nMachine: ", "\nRuns: 10,000 messages", "| latency p50 | 2.00 | 1.00 |",
		"[bench.md](docs/bench.md).\n" + readmeEnd + "\n\n## After\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("README lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "old\nlines") || strings.Contains(s, "Compared:") || strings.Contains(s, "raw ceiling") {
		t.Errorf("README section not compact:\n%s", s)
	}
	if n := strings.Count(s, "\n"); n > 25 {
		t.Errorf("README of %d lines for two adapters", n)
	}
}

func TestMergeKeepsOtherAdapters(t *testing.T) {
	base := testReport("b", "kafka")
	base.Notes = []string{"kafka-cluster: not measured: down", "moleculer-channels: missing"}
	run := testReport("kafka-cluster")
	run.Cases = []Case{{Batch, 100}, {Latency, 1}} // another order, a subset
	run.Cells = nil
	run.cell("kafka-cluster", 0, colChannels).Samples = []Result{{Rate: 300}}
	run.cell("kafka-cluster", 0, colRaw).Samples = []Result{{Rate: 600}}
	run.cell("kafka-cluster", 1, colRaw).Samples = []Result{{P50: 2}}
	run.Params.N = 2000
	run.Versions["kafka-cluster"] = "Kafka (3 nodes)"

	m := Merge(base, run)
	if got := strings.Join(m.Adapters, ","); got != "kafka,kafka-cluster,b" {
		t.Fatalf("adapters %s", got)
	}
	if len(m.Cases) != 4 {
		t.Fatalf("cases %v", m.Cases)
	}
	tab := m.CompactTable()
	for _, want := range []string{"| channels/raw | kafka | kafka-cluster | b |", "| batch | 0.50 | 0.50 | 1.00 |", "| latency p50 | 2.00 | – | 1.00 |"} {
		if !strings.Contains(tab, want) {
			t.Errorf("merged table lacks %q:\n%s", want, tab)
		}
	}
	if m.Versions["kafka-cluster"] != "Kafka (3 nodes)" || m.Versions["kafka"] != "Broker kafka" {
		t.Errorf("versions %v", m.Versions)
	}
	notes := strings.Join(m.Notes, "\n")
	if strings.Contains(notes, "not measured: down") || !strings.Contains(notes, "moleculer-channels: missing") ||
		!strings.Contains(notes, "kafka-cluster: measured on its own on 2026-11-26, 0s in all, with other parameters: Runs: 2,000 messages") {
		t.Errorf("notes:\n%s", notes)
	}

	// merging the same adapter again replaces its rows and its note
	again := Merge(m, run)
	if len(again.Cells) != len(m.Cells) || strings.Count(strings.Join(again.Notes, "\n"), "kafka-cluster:") != 1 {
		t.Errorf("second merge: %d cells (want %d), notes %q", len(again.Cells), len(m.Cells), again.Notes)
	}
}

func TestRenderRoundTrip(t *testing.T) {
	dir := t.TempDir()
	r := testReport("a", "b")
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	back, err := Load(filepath.Join(dir, "bench.json"))
	if err != nil {
		t.Fatal(err)
	}
	if back.Markdown("x.png") != r.Markdown("x.png") || back.CompactTable() != r.CompactTable() {
		t.Fatalf("loaded report renders differently:\n%s\nwant:\n%s", back.Markdown("x.png"), r.Markdown("x.png"))
	}
}

func TestDefaultAdaptersLeaveClustersOut(t *testing.T) {
	def := strings.Join(defaultAdapters(), ",")
	if def != "memory,redis,redis-cluster,amqp,nats,kafka" {
		t.Errorf("default adapters %s", def)
	}
	all := strings.Join(brokerNames(), ",")
	for _, p := range clusterProfiles {
		if !strings.Contains(all, p) {
			t.Errorf("cluster profile %s not registered (%s)", p, all)
		}
	}
}
