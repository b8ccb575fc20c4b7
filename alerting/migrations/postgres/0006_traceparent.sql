-- The W3C trace context of the span that wrote each page: the sender's
-- delivery span continues that trace, so one page's path (the evaluation
-- that fired it, the enqueue, every delivery attempt and its HTTP or SMTP
-- call) reads as one trace. Null for rows written before this column.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
