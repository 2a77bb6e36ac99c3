package kit

import (
	"sync/atomic"

	"github.com/microchannels/channels/broker"
)

// ConnState is the connection state every adapter keeps, so that all of
// them answer ErrNotConnected before Connect and ErrClosed after Close.
// The zero value is "not connected". It is safe for concurrent use.
type ConnState struct{ v atomic.Int32 }

const (
	stateIdle int32 = iota
	stateConnected
	stateClosed
)

// SetConnected records a successful Connect.
func (s *ConnState) SetConnected() { s.v.Store(stateConnected) }

// SetClosed records Close; it reports whether the state was connected.
func (s *ConnState) SetClosed() bool { return s.v.Swap(stateClosed) == stateConnected }

// Connected reports whether the adapter is usable.
func (s *ConnState) Connected() bool { return s.v.Load() == stateConnected }

// Check returns nil when connected, else ErrNotConnected or ErrClosed.
func (s *ConnState) Check() error {
	switch s.v.Load() {
	case stateConnected:
		return nil
	case stateClosed:
		return broker.ErrClosed
	}
	return broker.ErrNotConnected
}
