package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// DefaultQueue is the dead-letter queue of a plugin's default configuration,
// before the namespace prefix.
const DefaultQueue = broker.DefaultDeadLetterQueue

// HeaderReplayedFrom is the trail Replay adds to each message it sends back:
// a JSON array of Trail records, oldest first.
const HeaderReplayedFrom = "x-replayed-from"

// QueueName is the broker-side name of a dead-letter queue (or channel)
// declared as name under namespace: "ns.FAILED_MESSAGES" for namespace "ns"
// and name "" or DefaultQueue. It is channels.QualifiedName with the
// default queue filled in.
func QueueName(namespace, name string) (string, error) {
	if name == "" {
		name = DefaultQueue
	}
	return channels.QualifiedName(namespace, name)
}

// Filter selects dead letters. The zero Filter selects all of them; set
// fields must all match.
type Filter struct {
	// Channel is the full (namespaced) name of the channel the message was
	// dead-lettered from (x-original-channel).
	Channel string
	// Since keeps dead letters whose Entry.Time is at or after it; a dead
	// letter whose time is unknown does not match a Since.
	Since time.Time
	// ErrorContains keeps dead letters whose error message or error name
	// contains it, case-insensitively.
	ErrorContains string
	// IDs keeps the dead letters with these broker IDs.
	IDs []string
	// Limit stops after that many matches (0: no limit).
	Limit int
}

func (f Filter) match(e *Entry) bool {
	if f.Channel != "" && e.OriginalChannel != f.Channel {
		return false
	}
	if !f.Since.IsZero() && (e.Time.IsZero() || e.Time.Before(f.Since)) {
		return false
	}
	if f.ErrorContains != "" {
		s := strings.ToLower(f.ErrorContains)
		if !strings.Contains(strings.ToLower(e.ErrorMessage), s) && !strings.Contains(strings.ToLower(e.ErrorName), s) {
			return false
		}
	}
	if len(f.IDs) > 0 && !slices.Contains(f.IDs, e.ID) {
		return false
	}
	return true
}

// Entry is one dead letter as the tooling shows it.
type Entry struct {
	// ID is the broker's ID of the dead letter in its queue (see
	// broker.StoredMessage.ID).
	ID string `json:"id"`
	// OriginalChannel and OriginalGroup are where the message failed
	// (x-original-channel, x-original-group); full names.
	OriginalChannel string `json:"originalChannel"`
	OriginalGroup   string `json:"originalGroup,omitempty"`
	// ErrorMessage and ErrorName are the failure (x-error-message,
	// x-error-name), as written: one line, control characters escaped.
	// Empty for dead letters of @moleculer/channels 0.1, which carry no
	// error.
	ErrorMessage string `json:"errorMessage,omitempty"`
	ErrorName    string `json:"errorName,omitempty"`
	// Attempts is how many times the handler ran (x-redelivered-count + 1);
	// 0 when the dead letter does not tell.
	Attempts int `json:"attempts,omitempty"`
	// Time is when the message was dead-lettered (x-error-timestamp), else
	// when the broker stored it; zero when neither is known.
	Time time.Time `json:"time,omitzero"`
	// Key is the broker's key of the dead letter (broker.StoredMessage.Key:
	// Kafka's record key); nil when it has none.
	Key []byte `json:"key,omitempty"`
	// Payload is the message's bytes. In JSON (MarshalJSON) it is
	// "payload", as JSON, when it is JSON, else "raw", in base64.
	Payload []byte            `json:"-"`
	Headers map[string]string `json:"headers,omitempty"`
	// DecodeError says why the dead letter could not be read whole: its
	// headers (or payload field) did not decode (broker.StoredMessage
	// DecodeError, for example a serializer that is not the plugin's), or
	// the adapter listed only part of its headers (Kafka's
	// x-channels-headers-cut). Empty when it was read whole. Replay and
	// Move refuse such a dead letter unless ReplayOptions.Force.
	DecodeError string `json:"decodeError,omitempty"`
}

// headerHeadersCut is the header an adapter sets on a stored message it
// lists with only part of its headers (kafka.HeaderHeadersCut).
const headerHeadersCut = "x-channels-headers-cut"

// EntryOf reads a stored dead letter.
func EntryOf(m *broker.StoredMessage) Entry {
	h := m.Headers
	e := Entry{ID: m.ID, OriginalChannel: h[broker.HeaderOriginalChannel], OriginalGroup: h[broker.HeaderOriginalGroup],
		ErrorMessage: h[broker.HeaderErrorMessage], ErrorName: h[broker.HeaderErrorName],
		Time: m.Time, Key: m.Key, Payload: m.Payload, Headers: h, DecodeError: m.DecodeError}
	if cut, ok := h[headerHeadersCut]; ok && e.DecodeError == "" {
		e.DecodeError = "headers cut by the adapter: " + cut
	}
	if n, err := strconv.Atoi(h[broker.HeaderRedeliveredCount]); err == nil && n >= 0 && n < 1<<30 {
		e.Attempts = n + 1
	}
	if re := broker.ErrorFromHeaders(h); re != nil && !re.Timestamp.IsZero() {
		e.Time = re.Timestamp
	}
	return e
}

func need[T any](a broker.Adapter, ability string) (T, error) {
	t, ok := a.(T)
	if !ok {
		return t, fmt.Errorf("%w: the %s adapter has no %s", broker.ErrUnsupported, a.Name(), ability)
	}
	return t, nil
}

// List returns the dead letters of queue (a full name) that match f, oldest
// first. It reads them with the adapter's DeadLetterStore (else
// broker.ErrUnsupported) and takes nothing from the queue.
func List(ctx context.Context, a broker.Adapter, queue string, f Filter) ([]Entry, error) {
	st, err := need[broker.DeadLetterStore](a, "dead-letter store (browse and remove dead letters)")
	if err != nil {
		return nil, err
	}
	var out []Entry
	left := len(f.IDs)
	err = st.BrowseDeadLetters(ctx, queue, func(m *broker.StoredMessage) bool {
		e := EntryOf(m)
		if !f.match(&e) {
			return true
		}
		out = append(out, e)
		if len(f.IDs) > 0 {
			left--
		}
		return (f.Limit <= 0 || len(out) < f.Limit) && (len(f.IDs) == 0 || left > 0)
	})
	if err != nil {
		return out, fmt.Errorf("browse dead letters of %q: %w", queue, err)
	}
	return out, nil
}

// Untimed counts the dead letters of queue that f would match but for its
// Since: those whose time is unknown (Entry.Time zero), which no Since
// matches. It is 0 when f has no Since.
func Untimed(ctx context.Context, a broker.Adapter, queue string, f Filter) (int, error) {
	if f.Since.IsZero() {
		return 0, nil
	}
	st, err := need[broker.DeadLetterStore](a, "dead-letter store (browse and remove dead letters)")
	if err != nil {
		return 0, err
	}
	f.Since, f.Limit = time.Time{}, 0
	n := 0
	err = st.BrowseDeadLetters(ctx, queue, func(m *broker.StoredMessage) bool {
		e := EntryOf(m)
		if e.Time.IsZero() && f.match(&e) {
			n++
		}
		return true
	})
	return n, err
}

// Get returns the dead letter id of queue; broker.ErrNotFound when the
// queue holds none.
func Get(ctx context.Context, a broker.Adapter, queue, id string) (Entry, error) {
	es, err := List(ctx, a, queue, Filter{IDs: []string{id}, Limit: 1})
	if err != nil {
		return Entry{}, err
	}
	if len(es) == 0 {
		return Entry{}, fmt.Errorf("%w: dead letter %q in %q", broker.ErrNotFound, id, queue)
	}
	return es[0], nil
}

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

// resender sends the pages of a Replay or a Move.
type resender struct {
	a      broker.Adapter
	st     broker.DeadLetterStore
	queue  string
	opts   ReplayOptions
	move   bool
	res    *ReplayResult
	now    time.Time
	limits broker.Limits
	rate   *rate.Limiter
	done   int
}

// page sends the entries of res at these indexes, then removes those sent
// in one call, and returns the errors of those not done. Without
// ContinueOnError it stops at the first failed send (and removes those
// sent before it).
func (r *resender) page(ctx context.Context, page []int) []error {
	var errs []error
	var sent []int
	for _, i := range page {
		e, o := &r.res.Entries[i], &r.res.Outcomes[i]
		if r.rate != nil {
			if err := r.rate.Wait(ctx); err != nil {
				errs = append(errs, err)
				break
			}
		}
		var h map[string]string
		if r.move {
			h = movedHeaders(e.Headers)
		} else {
			h = ReplayHeaders(r.queue, *e, r.now, r.limits)
			if o.Group != "" {
				h[broker.HeaderGroup] = o.Group
			}
		}
		// Routed: where the broker can tell, a copy no queue or stream keeps
		// is refused rather than confirmed, and the dead letter is kept.
		out := &broker.Outgoing{Payload: e.Payload, Headers: h, Options: broker.PublishOptions{Raw: true, Routed: true, Key: keyOf(e)}}
		err := r.a.Publish(ctx, o.To, out)
		e.Payload = nil
		if err != nil {
			err = &SendError{ID: e.ID, Queue: r.queue, To: o.To, Err: err}
			o.Status, o.Error = StatusFailed, err.Error()
			errs = append(errs, err)
			if !r.opts.ContinueOnError {
				break
			}
			continue
		}
		r.res.Sent++
		sent = append(sent, i)
	}
	if len(sent) == 0 {
		return errs
	}
	ids := make([]string, len(sent))
	for j, i := range sent {
		ids[j] = r.res.Entries[i].ID
	}
	n, err := r.st.RemoveDeadLetters(ctx, r.queue, ids...)
	r.res.Removed += n
	kept := map[string]bool{}
	switch {
	case err != nil:
		for _, id := range ids {
			kept[id] = true
		}
	case n < len(ids):
		// Some were not removed: find which are still there. One the
		// broker did not find by its ID, or that went away by other hands,
		// may have been sent twice.
		err = ErrNotRemoved
		still := map[string]bool{}
		for _, id := range ids {
			still[id] = true
		}
		left := map[string]bool{}
		if berr := r.st.BrowseDeadLetters(ctx, r.queue, func(m *broker.StoredMessage) bool {
			if still[m.ID] {
				left[m.ID] = true
			}
			return len(left) < len(ids)
		}); berr != nil || len(left) == 0 {
			left = still // cannot tell: report them all
		}
		kept = left
	}
	for _, i := range sent {
		e, o := &r.res.Entries[i], &r.res.Outcomes[i]
		if kept[e.ID] {
			kerr := fmt.Errorf("dead letter %q of %q was sent to %q but not removed (a new replay sends it again): %w", e.ID, r.queue, o.To, err)
			o.Status, o.Error = StatusKept, kerr.Error()
			errs = append(errs, kerr)
			continue
		}
		o.Status = StatusDone
		r.done++
		if r.opts.Progress != nil {
			r.opts.Progress(r.done, len(r.res.Entries))
		}
	}
	return errs
}

// joinErrors is errorsOf the errors that are not nil (nil when none is).
func joinErrors(errs []error, more ...error) error {
	var all []error
	for _, err := range append(slices.Clip(errs), more...) {
		if err != nil {
			all = append(all, err)
		}
	}
	if len(all) == 0 {
		return nil
	}
	return errorsOf(all)
}

// notFound is the error of the IDs of f that are not among es (nil when
// f gives no IDs or all of them matched; a Limit reached tells nothing).
func notFound(queue string, f Filter, es []Entry) error {
	if len(f.IDs) == 0 || (f.Limit > 0 && len(es) >= f.Limit) {
		return nil
	}
	found := make(map[string]bool, len(es))
	for _, e := range es {
		found[e.ID] = true
	}
	var missing []string
	for _, id := range f.IDs {
		if !found[id] {
			missing = append(missing, strconv.Quote(id))
			found[id] = true
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: dead letters not in %s (or not matching the filter): %s", broker.ErrNotFound, queue, strings.Join(missing, ", "))
}

// uniqueIDs keeps the first entry of each ID: a broker that lists one
// dead letter twice (or two under one ID) gets one copy sent, and one
// removal by that ID.
func uniqueIDs(es []Entry) []Entry {
	seen := make(map[string]bool, len(es))
	out := es[:0:0]
	for _, e := range es {
		if !seen[e.ID] {
			seen[e.ID] = true
			out = append(out, e)
		}
	}
	return out
}

// errorsOf is one error for errs: the first ones in full and a count of
// the others (errors.Is matches any of them).
func errorsOf(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	const shown = 5
	msg := make([]string, 0, shown+1)
	for i, err := range errs {
		if i == shown {
			msg = append(msg, fmt.Sprintf("and %d more", len(errs)-shown))
			break
		}
		msg = append(msg, err.Error())
	}
	return &joined{msg: strings.Join(msg, "; "), errs: errs}
}

type joined struct {
	msg  string
	errs []error
}

func (j *joined) Error() string   { return j.msg }
func (j *joined) Unwrap() []error { return j.errs }

// Purge removes the dead letters of queue that match f and returns how
// many the broker removed. IDs of f that matched no dead letter give an
// error wrapping broker.ErrNotFound, after the others are removed.
func Purge(ctx context.Context, a broker.Adapter, queue string, f Filter) (int, error) {
	st, err := need[broker.DeadLetterStore](a, "dead-letter store (browse and remove dead letters)")
	if err != nil {
		return 0, err
	}
	// Only the IDs are held, then removed DefaultBatchSize at a time.
	var es []Entry
	seen := map[string]bool{}
	err = st.BrowseDeadLetters(ctx, queue, func(m *broker.StoredMessage) bool {
		e := EntryOf(m)
		if seen[e.ID] || !f.match(&e) {
			return true
		}
		seen[e.ID] = true
		es = append(es, Entry{ID: e.ID})
		return f.Limit <= 0 || len(es) < f.Limit
	})
	if err != nil {
		return 0, fmt.Errorf("browse dead letters of %q: %w", queue, err)
	}
	removed := 0
	const batch = DefaultBatchSize
	for i := 0; i < len(es); i += batch {
		ids := make([]string, 0, batch)
		for _, e := range es[i:min(i+batch, len(es))] {
			ids = append(ids, e.ID)
		}
		n, err := st.RemoveDeadLetters(ctx, queue, ids...)
		removed += n
		if err != nil {
			return removed, fmt.Errorf("remove dead letters of %q: %w", queue, err)
		}
	}
	return removed, notFound(queue, f, es)
}

// Channels lists the channels whose full name starts with "namespace."
// (every channel for an empty namespace), with their groups' backlogs.
func Channels(ctx context.Context, a broker.Adapter, namespace string) ([]broker.ChannelInfo, error) {
	cl, err := need[broker.ChannelLister](a, "channel listing")
	if err != nil {
		return nil, err
	}
	prefix := ""
	if namespace != "" {
		prefix = namespace + "."
	}
	return cl.Channels(ctx, prefix)
}

// Tail calls fn with each message sent to channel (a full name) after Tail
// started, without joining any group, until ctx ends (then it returns nil)
// or fn returns false.
func Tail(ctx context.Context, a broker.Adapter, channel string, fn func(*broker.StoredMessage) bool) error {
	t, err := need[broker.Tailer](a, "tail")
	if err != nil {
		return err
	}
	return t.Tail(ctx, channel, fn)
}

// RemoveMessage deletes the stored message id of channel (a full name);
// broker.ErrNotFound when the channel holds no such message.
func RemoveMessage(ctx context.Context, a broker.Adapter, channel, id string) error {
	r, err := need[broker.MessageRemover](a, "message removal")
	if err != nil {
		return err
	}
	return r.RemoveMessage(ctx, channel, id)
}

// Trail is one record of HeaderReplayedFrom: a replay of a dead letter.
type Trail struct {
	// Queue and ID are the dead letter's queue and ID.
	Queue string `json:"q"`
	ID    string `json:"id"`
	// Error is "name: message" of its failure, short (cut to 256 bytes).
	Error string `json:"err,omitempty"`
	// At is when it was replayed (RFC 3339, UTC, seconds).
	At string `json:"at"`
}

// MaxTrail is the largest HeaderReplayedFrom Replay writes, in bytes: the
// oldest records are left out to stay under it (the newest is always kept).
const MaxTrail = 2048

// ParseTrail reads a HeaderReplayedFrom value; a value that is not a trail
// gives nil.
func ParseTrail(v string) []Trail {
	if v == "" || len(v) > broker.MaxHeadersSize {
		return nil
	}
	var t []Trail
	if json.Unmarshal([]byte(v), &t) != nil {
		return nil
	}
	return t
}

// ReplayHeaders are the headers Replay sends e with (see Replay), fitted
// to limits: when they do not fit, the older trail records are left out,
// then the error of the newest one.
func ReplayHeaders(queue string, e Entry, now time.Time, limits broker.Limits) map[string]string {
	h := make(map[string]string, len(e.Headers)+1)
	for k, v := range e.Headers {
		if isFailureHeader(k) || isInternalHeader(k) {
			continue
		}
		h[k] = v
	}
	// A header the consumer could not decode was kept under
	// x-original-<name> (broker.DeadLetterHeaders): it goes back under its
	// name, so that the replayed message is the one that failed (it fails
	// again if the cause is not fixed, rather than running without it).
	for k, v := range e.Headers {
		name, ok := strings.CutPrefix(k, "x-original-")
		if !ok || name == "" || strings.HasPrefix(name, "x-") || name == "channel" || name == "group" || name == "id" {
			continue
		}
		if _, taken := h[name]; !taken {
			h[name] = v
		}
	}
	delete(h, HeaderReplayedFrom)
	rec := Trail{Queue: queue, ID: e.ID, At: now.UTC().Format(time.RFC3339)}
	if e.ErrorName != "" || e.ErrorMessage != "" {
		rec.Error = broker.ShortEscaped(strings.TrimPrefix(e.ErrorName+": "+e.ErrorMessage, ": "))
	}
	trail := append(ParseTrail(e.Headers[HeaderReplayedFrom]), rec)
	for {
		b, _ := json.Marshal(trail)
		h[HeaderReplayedFrom] = string(b)
		if len(trail) == 1 || (len(b) <= MaxTrail && limits.Check(len(e.Payload), h) == nil) {
			break
		}
		trail = trail[1:]
	}
	if limits.Check(len(e.Payload), h) != nil && rec.Error != "" {
		rec.Error = ""
		b, _ := json.Marshal([]Trail{rec})
		h[HeaderReplayedFrom] = string(b)
	}
	return h
}

// movedHeaders are the headers Move sends a dead letter with.
func movedHeaders(src map[string]string) map[string]string {
	h := make(map[string]string, len(src))
	for k, v := range src {
		if !isInternalHeader(k) {
			h[k] = v
		}
	}
	return h
}

// isFailureHeader tells the headers of a dead letter's failure.
func isFailureHeader(k string) bool {
	return strings.HasPrefix(k, broker.HeaderErrorPrefix) || strings.HasPrefix(k, "x-original-") ||
		k == broker.HeaderRedeliveredCount
}

// keyOf is the message key a copy of e is sent with: its record key where
// the broker stores one (Kafka), else the portable key it was sent with
// (broker.HeaderKey); "" for none.
func keyOf(e *Entry) string {
	if len(e.Key) > 0 {
		return string(e.Key)
	}
	return e.Headers[broker.HeaderKey]
}

// isInternalHeader tells the headers adapters and brokers keep for
// themselves: x-group, x-channels-* (but the portable key, HeaderKey), Kafka's x-retry-not-before (a retry's
// delay) and what RabbitMQ adds when it dead-letters a message (x-death,
// x-first-death-*, x-last-death-*).
func isInternalHeader(k string) bool {
	return k == broker.HeaderGroup || (strings.HasPrefix(k, "x-channels-") && k != broker.HeaderKey) || k == "x-retry-not-before" ||
		k == "x-death" || strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-")
}
