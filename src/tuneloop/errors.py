"""User-facing errors: what went wrong, where (file:line or config field), and how to fix it.

Every mistake a user can make (a broken data line, an unknown recipe key, a model that is not on
disk) is raised as a `UserError`. The command line prints it without a traceback and exits with
status 2; library callers can catch it like any exception.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Problem:
    """One problem: `where` is "file:line", "file:line:col" or a config field path."""

    what: str
    where: str | None = None
    fix: str | None = None

    def render(self) -> str:
        head = f"{self.where}: {self.what}" if self.where else self.what
        return f"{head}\n  fix: {self.fix}" if self.fix else head


class UserError(Exception):
    """A mistake in the user's input, reported as one or more problems at once."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.problems = [Problem(what, where, fix)]
        super().__init__(self.render())

    @classmethod
    def many(cls, problems: list[Problem], title: str | None = None) -> UserError:
        err = cls.__new__(cls)
        err.problems = list(problems)
        err.title = title
        Exception.__init__(err, err.render())
        return err

    def render(self) -> str:
        body = "\n".join(p.render() for p in self.problems)
        title = getattr(self, "title", None)
        return f"{title}\n{body}" if title else body


class DataError(UserError):
    """A problem in a data file; `where` is always "path:line" (or the path for a whole file)."""

    def __init__(self, path: str, line: int | None, what: str, fix: str | None = None):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line is not None else str(path)
        UserError.__init__(self, what, where, fix)
