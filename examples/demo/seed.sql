-- The demo's sample data: customers with made-up personal data (names, e-mail addresses,
-- phone numbers and card numbers that pass the Luhn check but belong to nobody).
DROP TABLE IF EXISTS customers;
CREATE TABLE customers (
    id integer PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    phone text NOT NULL,
    card text NOT NULL,
    city text NOT NULL
);
INSERT INTO customers VALUES
    (1, 'Ada Lovelace', 'ada.lovelace@example.com', '+1 415 555 0101', '4111 1111 1111 1111', 'London'),
    (2, 'Alan Turing', 'alan.turing@example.org', '+44 20 7946 0018', '5555 5555 5555 4444', 'Manchester'),
    (3, 'Grace Hopper', 'grace@example.net', '(212) 555-0199', '3782 822463 10005', 'New York'),
    (4, 'Edsger Dijkstra', 'ewd@example.com', '+31 20 555 0123', '6011 1111 1111 1117', 'Amsterdam'),
    (5, 'Barbara Liskov', 'liskov@example.edu', '617-555-0142', '4012 8888 8888 1881', 'Boston'),
    (6, 'Donald Knuth', 'knuth@example.edu', '650 555 0177', '5105 1051 0510 5100', 'Stanford'),
    (7, 'Margaret Hamilton', 'mh@example.com', '+1 617 555 0111', '4222 2222 2222 2', 'Cambridge'),
    (8, 'Ken Thompson', 'ken@example.org', '(908) 555-0163', '3056 9309 0259 04', 'Murray Hill');
