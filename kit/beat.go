package kit

import "time"

// Beat calls beat every interval, from now until the drain has waited for
// the running handlers (or its deadline passed). Unlike the loops, it goes
// on through the drain: the messages of handlers that run into a stop keep
// being refreshed with the broker (Redis idle time, JetStream in-progress)
// instead of looking abandoned to the other members, which would run them
// a second time. Adapters call it once Start has started the loops.
func (c *Consumer) Beat(every time.Duration, beat func()) {
	c.beats.Add(1)
	go func() {
		defer c.beats.Done()
		Tick(every, c.beatStop, beat)
	}()
}

// Tick calls fn every interval until stop is closed; no call starts once
// stop is closed.
func Tick(every time.Duration, stop <-chan struct{}, fn func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			select {
			case <-stop: // both were ready
				return
			default:
				fn()
			}
		}
	}
}
