package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
)

// Load reads a report written by Write (bench.json).
func Load(file string) (*Report, error) {
	js, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	r := &Report{}
	if err := json.Unmarshal(js, r); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if r.Versions == nil {
		r.Versions = map[string]string{}
	}
	for _, x := range r.Cells {
		if x.Case < 0 || x.Case >= len(r.Cases) {
			return nil, fmt.Errorf("%s: cell of %s/%s names case %d of %d", file, x.Adapter, x.Column, x.Case, len(r.Cases))
		}
	}
	return r, nil
}

// Merge returns base with the rows of r's adapters in place of its own
// rows of the same adapters; the other adapters' rows, base's machine,
// parameters and date are kept. Each of r's adapters gets a note saying
// when it was measured (and how, with other parameters than base).
func Merge(base, r *Report) *Report {
	out := *base
	out.Versions = maps.Clone(base.Versions)
	if out.Versions == nil {
		out.Versions = map[string]string{}
	}
	out.Cases = slices.Clone(base.Cases)
	replaced := func(a string) bool { return slices.Contains(r.Adapters, a) }
	out.Cells = nil
	for _, x := range base.Cells {
		if !replaced(x.Adapter) {
			out.Cells = append(out.Cells, x)
		}
	}
	for _, x := range r.Cells {
		y := *x
		y.Case = slices.Index(out.Cases, r.Cases[x.Case])
		if y.Case < 0 {
			out.Cases = append(out.Cases, r.Cases[x.Case])
			y.Case = len(out.Cases) - 1
		}
		out.Cells = append(out.Cells, &y)
	}
	out.Columns = nil
	for _, col := range columns {
		if slices.Contains(base.Columns, col) || slices.Contains(r.Columns, col) {
			out.Columns = append(out.Columns, col)
		}
	}
	var adapters []string
	for _, a := range append(slices.Clone(base.Adapters), r.Adapters...) {
		if !slices.Contains(adapters, a) {
			adapters = append(adapters, a)
		}
	}
	slices.SortStableFunc(adapters, func(a, b string) int { return adapterRank(a) - adapterRank(b) })
	out.Adapters = adapters
	out.Notes = nil
	keep := func(n string) bool {
		for _, a := range r.Adapters {
			if strings.HasPrefix(n, a+":") {
				return false
			}
		}
		return true
	}
	for _, n := range base.Notes {
		if keep(n) && !slices.Contains(out.Notes, n) {
			out.Notes = append(out.Notes, n)
		}
	}
	for _, n := range r.Notes {
		if !slices.Contains(out.Notes, n) {
			out.Notes = append(out.Notes, n)
		}
	}
	for _, a := range r.Adapters {
		out.Versions[a] = r.Versions[a]
		note := fmt.Sprintf("%s: measured on its own on %s, %s in all", a, r.Started.UTC().Format("2006-01-02"), r.Took.Round(time.Second))
		if r.Params != base.Params || r.Reps != base.Reps {
			note += ", with other parameters: " + strings.TrimSuffix(r.runsLine(), "\n")
		}
		out.Notes = append(out.Notes, note)
	}
	return &out
}
