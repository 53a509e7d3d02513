"""The routes of the annotation app, one module per page: login (login, logout, home), sample (the rating
page, its submit, done, the video and the page script) and admin (progress, agreement, exports)."""
