"""The contracts of the event topics: compatibility between schema versions, AsyncAPI docs."""
