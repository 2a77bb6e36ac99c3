package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/microchannels/channels/channelstest"
	. "github.com/onsi/ginkgo/v2"
	goredis "github.com/redis/go-redis/v9"
)

// repoRoot is the repository holding the test's working directory (go test
// runs in the package directory): the nearest parent with go.mod and
// scripts/services.sh.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "services.sh")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no repository root with scripts/services.sh above the working directory")
		}
		dir = parent
	}
}

// servicesDir is where scripts/services.sh keeps its pids (it only stops
// brokers whose pids it wrote there).
func servicesDir(root string) string {
	if d := os.Getenv("CHANNELS_SERVICES_DIR"); d != "" {
		return d
	}
	return filepath.Join(root, ".services")
}

// services runs scripts/services.sh with args from the repository root.
func services(ctx context.Context, args ...string) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "services.sh"))
	cmd.Args = append(cmd.Args, args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	fmt.Fprintf(GinkgoWriter, "scripts/services.sh %s:\n%s", strings.Join(args, " "), out)
	if err != nil {
		return fmt.Errorf("scripts/services.sh %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// notOurs explains why a broker did not stop or restart.
func notOurs(name string) string {
	root, _ := repoRoot()
	return fmt.Sprintf("scripts/services.sh stops and restarts only the brokers it started itself (pids in %s); "+
		"start %s with `scripts/services.sh up %s` from this checkout, or point CHANNELS_SERVICES_DIR at the state "+
		"directory of the checkout that started it", servicesDir(root), name, name)
}

// redisNodes returns, for each address, the run_id of the Redis server
// answering there ("" when none answers).
func redisRunIDs(addrs []string) map[string]string {
	ids := make(map[string]string, len(addrs))
	for _, a := range addrs {
		c := goredis.NewClient(&goredis.Options{Addr: a, MaxRetries: -1, DialTimeout: time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err := c.Info(ctx, "server").Result()
		cancel()
		c.Close()
		if err != nil {
			ids[a] = ""
			continue
		}
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "run_id:"); ok {
				ids[a] = v
			}
		}
	}
	return ids
}

// redisServiceHooks are the Restart, BrokerDown and BrokerUp hooks of a
// Redis target run by scripts/services.sh under name, on addrs. Each checks
// its effect on every node (a new run_id after a restart, no answer after
// down, an answer after up), so a broker the script did not start (and so
// leaves alone) fails the spec instead of passing it untested.
func redisServiceHooks(name string, addrs func() []string) (restart, down, up func(ctx context.Context) error) {
	restart = func(ctx context.Context) error {
		before := redisRunIDs(addrs())
		if err := services(ctx, "restart", name); err != nil {
			return err
		}
		after := redisRunIDs(addrs())
		for a, id := range after {
			if id == "" {
				return fmt.Errorf("%s: %s does not answer after the restart", name, a)
			}
			if id == before[a] {
				return fmt.Errorf("%s: %s was not restarted (same run_id): %s", name, a, notOurs(name))
			}
		}
		return nil
	}
	down = func(ctx context.Context) error {
		if err := services(ctx, "down", name); err != nil {
			return err
		}
		for a, id := range redisRunIDs(addrs()) {
			if id != "" {
				return fmt.Errorf("%s: %s still answers after down: %s", name, a, notOurs(name))
			}
		}
		return nil
	}
	up = func(ctx context.Context) error {
		if err := services(ctx, "up", name); err != nil {
			return err
		}
		for a, id := range redisRunIDs(addrs()) {
			if id == "" {
				return fmt.Errorf("%s: %s does not answer after up", name, a)
			}
		}
		return nil
	}
	return restart, down, up
}

// redisURLAddr is the host:port of a redis:// URL.
func redisURLAddr(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return []string{"127.0.0.1:6379"}
	}
	return []string{u.Host}
}

// redisHostile is the Hostile hook of a Redis target: XADD of the raw
// fields with a plain go-redis client.
func redisHostile(newClient func() goredis.UniversalClient) func(ctx context.Context, channel string, e channelstest.RawEntry) (string, error) {
	return func(ctx context.Context, channel string, e channelstest.RawEntry) (string, error) {
		c := newClient()
		defer c.Close()
		var values []any
		if e.NoPayload {
			values = append(values, "junk", "no payload field here")
		} else {
			values = append(values, "payload", e.Payload)
		}
		if e.Headers != nil {
			values = append(values, "headers", e.Headers)
		}
		return c.XAdd(ctx, &goredis.XAddArgs{Stream: channel, Values: values}).Result()
	}
}
