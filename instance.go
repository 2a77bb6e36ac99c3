package channels

import (
	"strconv"
	"sync"
)

// instances hands out the instance names of the plugins connected in this
// process, per node id: the first plugin connected with a node id gets the
// node id itself, the next ones "<id>-2", "<id>-3"... (the lowest number
// free). Consumer names derive from the instance name, so two plugins of one
// service in one process (two members of one group, or two stacked plugins
// on one broker) never share a broker-side consumer, and a plugin started
// alone, or plugins started in the same order, get the same names after a
// restart. It is process-wide state on purpose, as database/sql's driver
// registry: consumer names are unique per process, not per plugin.
var instances = struct {
	sync.Mutex
	taken map[string]map[int]*Plugin
}{taken: map[string]map[int]*Plugin{}}

// claimInstance returns the instance name of p for node id.
func claimInstance(p *Plugin, id string) string {
	instances.Lock()
	defer instances.Unlock()
	byN := instances.taken[id]
	if byN == nil {
		byN = map[int]*Plugin{}
		instances.taken[id] = byN
	}
	n := 1
	for ; byN[n] != nil && byN[n] != p; n++ {
	}
	byN[n] = p
	if n == 1 {
		return id
	}
	return id + "-" + strconv.Itoa(n)
}

// releaseInstance frees the instance name p holds for node id.
func releaseInstance(p *Plugin, id string) {
	instances.Lock()
	defer instances.Unlock()
	for n, q := range instances.taken[id] {
		if q == p {
			delete(instances.taken[id], n)
		}
	}
	if len(instances.taken[id]) == 0 {
		delete(instances.taken, id)
	}
}
