"""The parts of email delivery that `jobs.email`'s dispatch is made of (no actors here): the
rate shared by every worker (`rate`), the dispatcher slots (`slots`), one SMTP connection
(`smtp`) and the pipeline that sends a claimed batch and records each row's outcome
(`delivery`)."""
