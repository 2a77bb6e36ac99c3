package dlq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// ReplayOptions changes a Replay or a Move.
type ReplayOptions struct {
	// To is the full name of the channel every message is sent to; empty:
	// each message goes back to its original channel. MoveWith requires it.
	To string
	// DryRun lists what would be sent and sends and removes nothing.
	DryRun bool
	// Namespace, when set, keeps every destination (To, or each dead
	// letter's x-original-channel, which anyone able to write to the queue
	// can set) within "Namespace.": a dead letter that would go elsewhere
	// is refused (ErrDestination) unless AnyNamespace.
	Namespace    string
	AnyNamespace bool
	// Force resends dead letters that could not be read whole
	// (Entry.DecodeError), with what could be read of them. Without it they
	// are refused: their headers or payload would be lost.
	Force bool
	// Group, when set, makes Replay send each copy to that group of its
	// channel only, where the adapter can target one group (Kafka: the
	// x-group header, which the channel's other groups skip); an adapter
	// that cannot gets an error wrapping broker.ErrUnsupported before
	// anything is sent. OriginalGroup does the same with each dead letter's
	// own x-original-group. Without them (the default) a replayed message
	// is a new message of its channel: every group of the channel gets it,
	// also those that handled it the first time. Move ignores both.
	Group         string
	OriginalGroup bool
	// ContinueOnError goes on past a dead letter that is refused (see
	// Replay), whose send fails or that is not removed: the others are
	// done, and the error returned tells of each one not done
	// (ReplayResult.Outcomes says which).
	ContinueOnError bool
	// BatchSize is how many dead letters are read (with their payloads),
	// sent, and then removed in one call at a time (DefaultBatchSize when
	// 0 or less).
	BatchSize int
	// Rate, when more than 0, bounds the sends to this many per second.
	Rate float64
	// Progress, when set, is called after each message done with how many
	// are done of how many matched.
	Progress func(done, total int)
}

// DefaultBatchSize is ReplayOptions.BatchSize when not set.
const DefaultBatchSize = 100

// Status is what became of one dead letter in a Replay or a Move.
type Status string

// Statuses of Outcome.
const (
	// StatusPending: not sent (a dry run, or an error stopped the
	// operation before it).
	StatusPending Status = "pending"
	// StatusDone: sent and removed from the queue.
	StatusDone Status = "done"
	// StatusKept: sent, and still in the queue (its removal failed or
	// removed nothing): a new replay sends it again.
	StatusKept Status = "kept"
	// StatusFailed: the send failed; the dead letter is still in the queue.
	StatusFailed Status = "failed"
	// StatusRefused: not sent, for a reason found before anything was
	// sent (no destination, unreadable; see Outcome.Error).
	StatusRefused Status = "refused"
)

// Outcome is what became of one dead letter in a Replay or a Move.
type Outcome struct {
	// To is the full name of the channel it was (or would be) sent to.
	To string `json:"to,omitempty"`
	// Group is the one group it was sent to (ReplayOptions.Group or
	// OriginalGroup); empty: every group of To.
	Group  string `json:"group,omitempty"`
	Status Status `json:"status"`
	// Error is why it is not done; empty when done or pending.
	Error string `json:"error,omitempty"`
}

// ReplayResult is what a Replay or a Move did.
type ReplayResult struct {
	// Entries are the dead letters that matched, in the order they were
	// handled (all of them, also those not done when an error stopped the
	// operation).
	Entries []Entry
	// Outcomes are what became of each of Entries, at the same index.
	Outcomes []Outcome
	// Sent counts the messages published (0 for a dry run).
	Sent int
	// Removed counts the dead letters removed from the queue.
	Removed int
}

// ErrNoDestination is returned by Replay, before anything is sent, when a
// matching dead letter names no original channel and no To is given.
var ErrNoDestination = errors.New("dlq: dead letter has no x-original-channel; give a destination (To)")

// ErrDestination is returned by Replay and Move, before anything is sent,
// when a matching dead letter would be sent to the queue it is read from,
// to a name that is not a valid channel name, or out of
// ReplayOptions.Namespace.
var ErrDestination = errors.New("dlq: destination refused")

// ErrUnreadable is returned by Replay and Move, before anything is sent,
// when a matching dead letter could not be read whole (Entry.DecodeError)
// and ReplayOptions.Force is not set.
var ErrUnreadable = errors.New("dlq: dead letter could not be read whole (resending it would lose its headers or payload; ReplayOptions.Force, --force, resends it as read)")

// checkDestination refuses to send the dead letter id of queue to to when
// to is the queue itself, not a channel name, or out of the namespace.
func checkDestination(queue, id, to string, opts ReplayOptions) error {
	if to == queue {
		return fmt.Errorf("%w: dead letter %q would be sent to its own queue %q", ErrDestination, id, to)
	}
	if _, err := channels.QualifiedName("", to); err != nil {
		return fmt.Errorf("%w: dead letter %q: %v", ErrDestination, id, err)
	}
	if opts.Namespace != "" && !opts.AnyNamespace && !strings.HasPrefix(to, opts.Namespace+".") {
		return fmt.Errorf("%w: dead letter %q would be sent to %q, out of namespace %q (allow it with AnyNamespace, --any-namespace)",
			ErrDestination, id, to, opts.Namespace)
	}
	return nil
}

// targetsGroups tells the adapters that deliver a message carrying
// broker.HeaderGroup to that group of its channel only: Kafka.
func targetsGroups(a broker.Adapter) bool { return a.Name() == "Kafka" }

// SendError is the error of a copy the broker did not accept in a Replay
// or a Move; the dead letter is still in the queue. Err is the adapter's
// error: an ErrNotFound in it is about the destination (for example a
// Routed send no queue keeps), not about the dead letter.
type SendError struct {
	// ID and Queue are the dead letter's, To where it was sent.
	ID, Queue, To string
	Err           error
}

func (e *SendError) Error() string {
	return fmt.Sprintf("send dead letter %q of %q to %q (nothing removed): %v", e.ID, e.Queue, e.To, e.Err)
}

func (e *SendError) Unwrap() error { return e.Err }

// ErrNotRemoved is the error of a dead letter that was sent and that the
// broker's removal did not remove (it removed none): it may still be in
// the queue, and a new replay would send it again.
var ErrNotRemoved = errors.New("dlq: the broker removed nothing")

// Replay sends the dead letters of queue that match f back to their
// original channel (or opts.To) as new messages, on their first attempt,
// then removes them from the queue.
//
// Each message keeps its payload, byte for byte, and its headers except
// the failure: the x-error-*, x-redelivered-count, x-original-* and x-group
// headers, the adapters' own x-channels-* headers and the brokers' retry
// bookkeeping (x-retry-not-before, x-death, x-first-death-*,
// x-last-death-*) are left out (the portable key, x-channels-key, is kept,
// and the copy is sent with the message key: Kafka's record key, else
// that header's); a header the consumer could not decode,
// kept as x-original-<name>, goes back under its name; and
// HeaderReplayedFrom records where it came from (queue, ID, error, time,
// after any trail it already had; see Trail).
//
// Before anything is sent, every matching dead letter is checked: one with
// no destination (ErrNoDestination), one whose destination is refused
// (ErrDestination: its own queue, not a channel name, out of
// opts.Namespace) or one that could not be read whole (ErrUnreadable,
// unless opts.Force) stops the operation with nothing sent; ReplayResult.Outcomes tells which. IDs of f that matched no dead
// letter give, once the others are done, an error wrapping
// broker.ErrNotFound. A send the broker refuses is a *SendError.
//
// Dead letters listed twice under one ID are sent once.
//
// Dead letters are handled a page at a time (opts.BatchSize): read with
// their payloads, sent, then removed in one call. Only one page of payloads
// is held: ReplayResult.Entries leaves the payloads out.
//
// Crash safety: a dead letter is removed only after the broker accepted
// its copy (Publish returned nil). Every copy is sent with
// broker.PublishOptions.Routed: on brokers that can tell (RabbitMQ,
// JetStream) a copy that no queue or stream would keep is refused, and its
// dead letter stays. Replay stopped at any point (an error, a cancelled
// ctx, a killed process) has lost no message; at worst the page in hand
// was sent and not yet removed, and a second Replay sends it again.
// Replay returns at the first error (after removing what that page sent),
// with what it did so far, unless opts.ContinueOnError.
func Replay(ctx context.Context, a broker.Adapter, queue string, f Filter, opts ReplayOptions) (ReplayResult, error) {
	return resend(ctx, a, queue, f, opts, false)
}

// Move sends the dead letters of queue that match f to to (the full name
// of another queue or a channel) and removes them, with Replay's checks
// and crash safety. Unlike Replay, a moved message stays a dead letter:
// every header is kept (x-error-*, x-original-*, x-redelivered-count),
// except the adapters' own x-channels-* and x-group, and no trail is
// added, so it can be listed, replayed or purged from its new queue with
// the same filters.
func Move(ctx context.Context, a broker.Adapter, queue string, f Filter, to string) (ReplayResult, error) {
	return MoveWith(ctx, a, queue, f, ReplayOptions{To: to})
}

// MoveWith is Move with options: opts.To is required; the other options
// apply as for Replay.
func MoveWith(ctx context.Context, a broker.Adapter, queue string, f Filter, opts ReplayOptions) (ReplayResult, error) {
	if opts.To == "" {
		return ReplayResult{}, fmt.Errorf("%w: move needs a destination", broker.ErrInvalidOption)
	}
	return resend(ctx, a, queue, f, opts, true)
}

func resend(ctx context.Context, a broker.Adapter, queue string, f Filter, opts ReplayOptions, move bool) (ReplayResult, error) {
	st, err := need[broker.DeadLetterStore](a, "dead-letter store (browse and remove dead letters)")
	if err != nil {
		return ReplayResult{}, err
	}
	// First pass: what matches now, each checked, without the payloads.
	var res ReplayResult
	at := map[string]int{} // ID -> index in res
	err = st.BrowseDeadLetters(ctx, queue, func(m *broker.StoredMessage) bool {
		e := EntryOf(m)
		if _, dup := at[e.ID]; dup || !f.match(&e) {
			return true
		}
		at[e.ID] = len(res.Entries)
		e.Payload = nil
		res.Entries = append(res.Entries, e)
		return f.Limit <= 0 || len(res.Entries) < f.Limit
	})
	if err != nil {
		return res, fmt.Errorf("browse dead letters of %q: %w", queue, err)
	}
	res.Outcomes = make([]Outcome, len(res.Entries))
	targeted := !move && (opts.Group != "" || opts.OriginalGroup)
	if targeted && !targetsGroups(a) {
		return res, fmt.Errorf("%w: the %s adapter cannot send to one group of a channel (Group, OriginalGroup); a replay reaches every group", broker.ErrUnsupported, a.Name())
	}
	var refused []error
	for i, e := range res.Entries {
		o := &res.Outcomes[i]
		o.Status, o.To = StatusPending, opts.To
		if o.To == "" {
			o.To = e.OriginalChannel
		}
		var why error
		switch {
		case e.DecodeError != "" && !opts.Force:
			why = fmt.Errorf("%w: %q: %s", ErrUnreadable, e.ID, e.DecodeError)
		case o.To == "":
			why = fmt.Errorf("%w: %q", ErrNoDestination, e.ID)
		case targeted && opts.OriginalGroup && e.OriginalGroup == "":
			why = fmt.Errorf("%w: %q has no x-original-group", ErrNoDestination, e.ID)
		default:
			why = checkDestination(queue, e.ID, o.To, opts)
		}
		if targeted && why == nil {
			o.Group = opts.Group
			if opts.OriginalGroup {
				o.Group = e.OriginalGroup
			}
		}
		if why != nil {
			o.Status, o.Error = StatusRefused, why.Error()
			refused = append(refused, why)
		}
	}
	if len(refused) > 0 && !opts.ContinueOnError {
		return res, errorsOf(refused)
	}
	if opts.DryRun {
		return res, joinErrors(refused, notFound(queue, f, res.Entries))
	}

	r := &resender{a: a, st: st, queue: queue, opts: opts, move: move, res: &res, now: time.Now()}
	if l, ok := a.(broker.Limiter); ok {
		r.limits = l.Limits()
	}
	if opts.Rate > 0 {
		r.rate = rate.NewLimiter(rate.Limit(opts.Rate), 1)
	}
	pending := 0
	for _, o := range res.Outcomes {
		if o.Status == StatusPending {
			pending++
		}
	}
	batch := opts.BatchSize
	if batch <= 0 {
		batch = DefaultBatchSize
	}
	failed := refused
	// Then page by page: read up to batch of the pending ones (with their
	// payloads), send them, remove those sent.
	for pending > 0 {
		var page []int
		err := st.BrowseDeadLetters(ctx, queue, func(m *broker.StoredMessage) bool {
			i, ok := at[m.ID]
			if !ok || res.Outcomes[i].Status != StatusPending || slices.Contains(page, i) {
				return true
			}
			res.Entries[i].Payload = m.Payload
			page = append(page, i)
			return len(page) < batch
		})
		if err != nil {
			return res, joinErrors(failed, fmt.Errorf("browse dead letters of %q: %w", queue, err))
		}
		if len(page) == 0 {
			break // the others went away meanwhile
		}
		errs := r.page(ctx, page)
		pending -= len(page)
		failed = append(failed, errs...)
		if len(errs) > 0 && !opts.ContinueOnError {
			return res, joinErrors(failed)
		}
	}
	return res, joinErrors(failed, notFound(queue, f, res.Entries))
}
