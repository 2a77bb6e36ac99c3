// Package cluster runs the cluster fault scenarios (node-kill,
// rolling-restart, minority-partitioned) of channelstest on one clustered
// broker at a time: CHANNELS_CLUSTER names the profile that runs
// (scripts/cluster.sh PROFILE up), `make test-cluster` brings each up in turn.
// Each profile_<name>_test.go file registers its target.
package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"
)

// profiles are the cluster targets by profile name.
var profiles = map[string]func() channelstest.Target{}

func registerProfile(name string, t func() channelstest.Target) { profiles[name] = t }

func selected() []channelstest.Target {
	name := os.Getenv("CHANNELS_CLUSTER")
	if name == "" {
		return nil
	}
	f, ok := profiles[name]
	if !ok {
		panic(fmt.Sprintf("CHANNELS_CLUSTER=%q: no such profile", name))
	}
	return []channelstest.Target{f()}
}

func TestMain(m *testing.M) { channelstest.Main(m, selected()...) }

// TestCluster runs the specs labelled "cluster" on the profile named by
// CHANNELS_CLUSTER; without it (make test) there is nothing to run: make
// test-cluster sets it, and fails when a profile does not come up.
func TestCluster(t *testing.T) {
	ts := selected()
	if len(ts) == 0 {
		// Not a silent skip of the e2e suite: the clusters are a suite of
		// their own, which make test-cluster (called by .ci/run) runs.
		t.Skip("CHANNELS_CLUSTER is not set: make test-cluster runs each profile")
	}
	channelstest.Run(t, ts...)
}

// clusterCmd runs scripts/cluster.sh PROFILE verb args... bounded by ctx and
// returns its trimmed output.
func clusterCmd(ctx context.Context, profile, verb string, args ...string) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "cluster.sh")
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, script, append([]string{profile, verb}, args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("cluster.sh %s %s %v: %w: %s", profile, verb, args, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// scriptHooks are the Cluster hooks that call scripts/cluster.sh.
func scriptHooks(profile string, nodes int) *channelstest.Cluster {
	node := func(verb string) func(context.Context, int) error {
		return func(ctx context.Context, i int) error {
			_, err := clusterCmd(ctx, profile, verb, strconv.Itoa(i))
			return err
		}
	}
	return &channelstest.Cluster{
		Nodes:   nodes,
		Kill:    node("kill"),
		Start:   node("start"),
		Isolate: node("isolate"),
		Heal:    node("heal"),
	}
}
