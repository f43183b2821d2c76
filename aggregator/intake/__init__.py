"""The centre's door: authentication, validation before storage, receipts."""
