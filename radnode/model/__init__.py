"""Value types every stage passes around: analysis specs and results, the job
contract on the queue, report branding.

This package is the bottom of radnode's house: it imports nothing from radnode
but :mod:`radnode.uids`, so any stage (and ``settings``) can use it without
depending on another stage.
"""
