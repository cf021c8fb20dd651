"""Exchange Online mailboxes as a FUSE filesystem of attachments, through Microsoft Graph."""

__version__ = "0.1.0"
