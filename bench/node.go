package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// nodeRunner runs the tests on @moleculer/channels with node/bench.js, one
// process per run.
type nodeRunner struct {
	bin, script string
	versions    nodeVersions
}

type nodeVersions struct {
	Node      string `json:"node"`
	Moleculer string `json:"moleculer"`
	Channels  string `json:"channels"`
}

// newNodeRunner checks that node runs the script and finds its packages.
func newNodeRunner(ctx context.Context, bin, script string) (*nodeRunner, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, script, "--check")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s --check: %v: %s", bin, script, err, lastLines(stderr.String(), 3))
	}
	r := &nodeRunner{bin: bin, script: script}
	if err := json.Unmarshal(out, &r.versions); err != nil {
		return nil, fmt.Errorf("%s --check: %v", script, err)
	}
	return r, nil
}

func (r *nodeRunner) run(ctx context.Context, b Broker, channel string, c Case, p Params) (Result, error) {
	kind, addr := b.Node()
	if kind == "" {
		return Result{}, errNotAvailable
	}
	if c.Test == Batch {
		return Result{}, errNoBatch // @moleculer/channels 0.1.8 sends one message per call
	}
	args := []string{r.script, "--adapter", kind}
	if len(addr) > 0 {
		args = append(args, "--url", strings.Join(addr, ","))
	}
	args = append(args,
		"--channel", channel, "--test", c.Test.String(),
		"--mif", strconv.Itoa(c.MaxInFlight), "--n", strconv.Itoa(p.N),
		"--senders", strconv.Itoa(p.Senders),
		"--duration", strconv.FormatInt(p.LatencyFor.Milliseconds(), 10),
		"--warmup", strconv.Itoa(p.Warmup),
		"--timeout", strconv.FormatInt(p.Timeout.Milliseconds(), 10))
	ctx, cancel := context.WithTimeout(ctx, p.Timeout+30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, r.bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	var res struct {
		Result
		Error string `json:"error"`
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		return Result{}, fmt.Errorf("node: %v; %v: %s", runErr, err, lastLines(stderr.String(), 3))
	}
	if res.Error != "" {
		return Result{}, fmt.Errorf("node: %s", res.Error)
	}
	return res.Result, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
