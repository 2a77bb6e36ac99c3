package dlq

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/microchannels/channels/broker"
)

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
