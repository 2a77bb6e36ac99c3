package broker

import (
	"context"
	"sync"
)

// runCtx is the context of one handler run: the handlers' context's values
// and deadline, done once the run's outcome is decided (end) or when the
// handlers' context is done (a stop's deadline). It costs one allocation
// per run; its done channel, and its link to the parent, are made only
// when someone asks for Done. context.Cause of a run that ended is its
// parent's cause (nil while the parent lives), Err is context.Canceled.
type runCtx struct {
	context.Context
	mu     sync.Mutex
	done   chan struct{}
	err    error
	unhook func() bool // the parent's AfterFunc
}

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
	unhook := c.unhook
	c.unhook = nil
	c.mu.Unlock()
	if unhook != nil {
		unhook()
	}
}

func (c *runCtx) String() string { return "channels.handlerContext" }
