"""Everything between this server and CT-e1's General API.

``client`` is shared by every endpoint (URL, authentication, redaction, errors); ``transport`` is
the network path of one download; ``worker`` runs it in a thread watched from the event loop;
``audio_data`` is the one endpoint used today.
"""
