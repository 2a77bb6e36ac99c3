package kit

import (
	"context"
	"sync"
)

// runCtx is the context of one handler run: the handlers' context's values
// and deadline, done once the run's outcome is decided (end) or when the
// handlers' context is done (a stop's deadline). It costs one allocation
// per run; its done channel, and its link to the parent, are made only
// when someone asks for Done. A context derived from it (WithCancel,
// WithTimeout) follows it through AfterFunc, without a goroutine.
type runCtx struct {
	context.Context
	mu     sync.Mutex
	done   chan struct{}
	err    error
	unhook func() bool // the parent's AfterFunc
	afters []*afterRun // AfterFunc registrations not yet run or stopped
}

// afterRun is one AfterFunc registration.
type afterRun struct{ f func() }

func newRunCtx(parent context.Context) *runCtx { return &runCtx{Context: parent} }

func (c *runCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		switch {
		case c.err != nil:
			close(c.done)
		case c.Context.Done() != nil:
			parent := c.Context
			c.unhook = context.AfterFunc(parent, func() { c.end(parent.Err()) })
		}
	}
	return c.done
}

func (c *runCtx) Err() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err = c.Context.Err(); err != nil {
		c.end(err) // Done is closed whenever Err is not nil
	}
	return err
}

// end ends the run's context with err (the first end wins).
func (c *runCtx) end(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		if c.done != nil {
			close(c.done)
		}
	}
	unhook, afters := c.unhook, c.afters
	c.unhook, c.afters = nil, nil
	c.mu.Unlock()
	if unhook != nil {
		unhook()
	}
	for _, a := range afters {
		go a.f()
	}
}

// AfterFunc arranges for f to run in its own goroutine once the run's
// context is done, as [context.AfterFunc] does; stop unregisters f and
// reports whether it did so before f was started. The context package
// uses it for the contexts derived from a handler's context, which then
// follow the run without a goroutine of their own.
func (c *runCtx) AfterFunc(f func()) (stop func() bool) {
	c.Done() // links the run to its parent
	a := &afterRun{f: f}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.afters = append(c.afters, a)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.afters {
			if x == a {
				c.afters = append(c.afters[:i], c.afters[i+1:]...)
				return true
			}
		}
		return false
	}
}

func (c *runCtx) String() string { return "channels.handlerContext" }
