package cluster

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/redis"
)

// redisHAAddrs are the six nodes of scripts/cluster/redis-cluster-ha.sh:
// node i answers on its own loopback address 127.0.1.(i+1), port 7101+i
// (the addresses the script cuts a node off by).
var redisHAAddrs = []string{"127.0.1.1:7101", "127.0.1.2:7102", "127.0.1.3:7103",
	"127.0.1.4:7104", "127.0.1.5:7105", "127.0.1.6:7106"}

// redisHATimings: claims within the suite's deadlines.
var redisHATimings = redis.ChannelOptions{MinIdleTime: time.Second, ClaimInterval: 50 * time.Millisecond, ReadTimeout: 500 * time.Millisecond}

// redisHAWait is the replication the target's sends wait for: one replica
// (each master has one), so the replica a failover promotes holds every
// accepted send. While a slot's master has no replica (its replica was
// promoted when the master was killed, and the killed node is not back yet)
// every send to it fails after redisHAWaitTimeout (written, not accepted):
// a short timeout keeps the traffic going meanwhile.
const (
	redisHAWait        = 1
	redisHAWaitTimeout = 100 * time.Millisecond
)

func init() {
	registerProfile("redis-cluster-ha", func() channelstest.Target {
		c := scriptHooks("redis-cluster-ha", len(redisHAAddrs))
		c.Leader = redisHALeader
		// Sends through node i only: a single-node client (no slot map, no
		// redirection followed), so while node i is cut off its sends meet
		// its own answer: a WAIT short of the replica, then CLUSTERDOWN, then
		// MOVED once it is a replica again.
		c.NewAdapterOn = func(i int) (broker.Adapter, error) {
			return redis.NewFromOptions(&goredis.UniversalOptions{Addrs: redisHAAddrs[i : i+1]},
				redis.WithWaitReplicas(redisHAWait, redisHAWaitTimeout))
		}
		// The sends wait for one replica, the only candidate of a failover:
		// an accepted send must survive the loss of its master. (Without
		// WithWaitReplicas the target would be Lossy: replication is
		// asynchronous.)
		c.Lossy = false
		return channelstest.Target{
			Name: "redis-cluster-ha",
			NewAdapter: func() (broker.Adapter, error) {
				return redis.NewFromOptions(&goredis.UniversalOptions{Addrs: redisHAAddrs, IsClusterMode: true},
					redis.WithWaitReplicas(redisHAWait, redisHAWaitTimeout))
			},
			ChannelOptions: []any{redisHATimings},
			Probe: func() error {
				cc := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: redisHAAddrs})
				defer cc.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				return cc.Ping(ctx).Err()
			},
			Timeout:   30 * time.Second,
			Processes: true,
			ClaimTime: redisHATimings.MinIdleTime,
			Cluster:   c,
		}
	})
}

// redisHALeader returns the node of the master serving the slot of the
// channel's stream (CLUSTER KEYSLOT, CLUSTER SHARDS), asking the first node
// that answers.
func redisHALeader(ctx context.Context, channel string) (int, error) {
	var last error
	for _, addr := range redisHAAddrs {
		n := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
		i, err := func() (int, error) {
			defer n.Close()
			slot, err := n.ClusterKeySlot(ctx, channel).Result()
			if err != nil {
				return 0, err
			}
			shards, err := n.ClusterShards(ctx).Result()
			if err != nil {
				return 0, err
			}
			for _, sh := range shards {
				for _, r := range sh.Slots {
					if slot < r.Start || slot > r.End {
						continue
					}
					for _, nd := range sh.Nodes {
						if nd.Role == "master" && nd.Health == "online" {
							return addrIndex(net.JoinHostPort(nd.IP, strconv.Itoa(int(nd.Port))))
						}
					}
				}
			}
			return 0, fmt.Errorf("no online master serves slot %d", slot)
		}()
		if err == nil {
			return i, nil
		}
		last = err
	}
	return 0, fmt.Errorf("redis-cluster-ha leader of %q: %w", channel, last)
}

func addrIndex(addr string) (int, error) {
	for i, a := range redisHAAddrs {
		if a == addr {
			return i, nil
		}
	}
	return 0, fmt.Errorf("%s is no node of the profile", addr)
}
